"""Bounce messages as three mail servers write them (Postfix, Exim, Microsoft Exchange),
after the real notifications they send: their layout, field order, folding and quirks
(Exim puts Action first; Exchange writes 5.1.10 and returns only the headers; Postfix
folds its Diagnostic-Code). Each names the original message by `message_id`."""

# The notifications keep the long lines their mail servers write.
# ruff: noqa: E501

from __future__ import annotations


def postfix_hard(message_id: str, to: str = "nobody@example.org") -> str:
    return f"""\
Return-Path: <>
Received: by mail.sender.example (Postfix)
\tid 3F1A2C0123; Mon,  1 Dec 2026 09:30:01 +0000 (UTC)
Date: Mon,  1 Dec 2026 09:30:01 +0000 (UTC)
From: MAILER-DAEMON@mail.sender.example (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: news@acme.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="3F1A2C0123.1764581401/mail.sender.example"
Content-Transfer-Encoding: 8bit
Message-Id: <20261201093001.3F1A2C0124@mail.sender.example>

This is a MIME-encapsulated message.

--3F1A2C0123.1764581401/mail.sender.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.sender.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<{to}>: host mx.example.org[203.0.113.5] said: 550 5.1.1
    <{to}>: Recipient address rejected: User unknown in virtual
    mailbox table (in reply to RCPT TO command)

--3F1A2C0123.1764581401/mail.sender.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.sender.example
X-Postfix-Queue-ID: 3F1A2C0123
X-Postfix-Sender: rfc822; news@acme.example
Arrival-Date: Mon,  1 Dec 2026 09:30:00 +0000 (UTC)

Final-Recipient: rfc822; {to}
Original-Recipient: rfc822;{to}
Action: failed
Status: 5.1.1
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; 550 5.1.1 <{to}>: Recipient address
    rejected: User unknown in virtual mailbox table

--3F1A2C0123.1764581401/mail.sender.example
Content-Description: Undelivered Message
Content-Type: message/rfc822
Content-Transfer-Encoding: 8bit

Return-Path: <news@acme.example>
Message-ID: {message_id}
Date: Mon, 01 Dec 2026 09:29:59 +0000
From: Acme News <news@acme.example>
To: {to}
Subject: Hello

Hi there

--3F1A2C0123.1764581401/mail.sender.example--
"""


def postfix_delayed(message_id: str, to: str = "slow@example.org") -> str:
    return f"""\
Return-Path: <>
Date: Tue,  2 Dec 2026 09:30:01 +0000 (UTC)
From: MAILER-DAEMON@mail.sender.example (Mail Delivery System)
Subject: Delayed Mail (still being retried)
To: news@acme.example
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="A81B2C0456.1764667801/mail.sender.example"
Message-Id: <20261202093001.A81B2C0457@mail.sender.example>

--A81B2C0456.1764667801/mail.sender.example
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mail.sender.example.

####################################################################
# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #
####################################################################

--A81B2C0456.1764667801/mail.sender.example
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.sender.example
X-Postfix-Queue-ID: A81B2C0456
Arrival-Date: Mon,  1 Dec 2026 09:30:00 +0000 (UTC)

Final-Recipient: rfc822; {to}
Action: delayed
Status: 4.4.1
Diagnostic-Code: X-Postfix; connect to mx.example.org[203.0.113.9]:25: Connection
    timed out
Will-Retry-Until: Mon,  6 Dec 2026 09:30:00 +0000 (UTC)

--A81B2C0456.1764667801/mail.sender.example
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <news@acme.example>
Message-ID: {message_id}
From: Acme News <news@acme.example>
To: {to}
Subject: Hello

--A81B2C0456.1764667801/mail.sender.example--
"""


def exim_hard(message_id: str, to: str = "gone@example.net") -> str:
    return f"""\
Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.exim.example>
To: news@acme.example
References: {message_id}
Content-Type: multipart/report; report-type=delivery-status; boundary=1764581401-eximdsn-1804289383
MIME-Version: 1.0
Subject: Mail delivery failed: returning message to sender
Message-Id: <E1vQ5kX-000123-AB@mx.exim.example>
Date: Mon, 01 Dec 2026 09:30:01 +0000

--1764581401-eximdsn-1804289383
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  {to}
    host mx.example.net [198.51.100.7]
    SMTP error from remote mail server after RCPT TO:<{to}>:
    550 5.1.1 The email account that you tried to reach does not exist

--1764581401-eximdsn-1804289383
Content-type: message/delivery-status

Reporting-MTA: dns; mx.exim.example

Action: failed
Final-Recipient: rfc822;{to}
Status: 5.0.0
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 550 5.1.1 The email account that you tried to reach does not exist

--1764581401-eximdsn-1804289383
Content-type: message/rfc822

Return-path: <news@acme.example>
Message-ID: {message_id}
From: Acme News <news@acme.example>
To: {to}
Subject: Hello

Hi there

--1764581401-eximdsn-1804289383--
"""


def exim_mailbox_full(message_id: str, to: str = "full@example.net") -> str:
    return f"""\
Return-path: <>
From: Mail Delivery System <Mailer-Daemon@mx.exim.example>
To: news@acme.example
Content-Type: multipart/report; report-type=delivery-status; boundary=1764667801-eximdsn-846930886
MIME-Version: 1.0
Subject: Warning: message 1vQ5kX-000123-AB delayed 24 hours
X-Failed-Recipients: {to}
Message-Id: <E1vQRzK-000456-CD@mx.exim.example>
Date: Tue, 02 Dec 2026 09:30:01 +0000

--1764667801-eximdsn-846930886
Content-type: text/plain; charset=us-ascii

This message was created automatically by mail delivery software.
A message that you sent has not yet been delivered to one or more of its
recipients after more than 24 hours on the queue on mx.exim.example.

--1764667801-eximdsn-846930886
Content-type: message/delivery-status

Reporting-MTA: dns; mx.exim.example

Action: delayed
Final-Recipient: rfc822;{to}
Status: 4.2.2
Remote-MTA: dns; mx.example.net
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full
Will-Retry-Until: Sat, 06 Dec 2026 09:30:00 +0000

--1764667801-eximdsn-846930886
Content-type: text/rfc822-headers

Message-ID: {message_id}
From: Acme News <news@acme.example>
To: {to}
Subject: Hello

--1764667801-eximdsn-846930886--
"""


def exchange_hard(message_id: str, to: str = "pat.doe@corp.example") -> str:
    boundary = "9B095B5ADSN=_01D9A3C5B1F4E2D000000001EXCH01.corp.exam"
    return f"""\
From: postmaster@corp.example
To: news@acme.example
Date: Mon, 1 Dec 2026 09:30:02 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
X-MS-Exchange-Message-Is-Ndr:
Content-Language: en-US
Message-ID: <5d7a1b2c-9e8f-4a6b-8c1d-2e3f4a5b6c7d@EXCH01.corp.example>
In-Reply-To: {message_id}
References: {message_id}
Thread-Topic: Hello
Subject: Undeliverable: Hello
Auto-Submitted: auto-replied

--{boundary}
Content-Type: multipart/alternative; differences=Content-Type;
\tboundary="b1_exch"

--b1_exch
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

Delivery has failed to these recipients or groups:

Pat Doe ({to})
The email address you entered couldn't be found. Please check the recipient=
's email address and try to resend the message.

--b1_exch
Content-Type: text/html; charset="us-ascii"
Content-Transfer-Encoding: quoted-printable

<html><body><p>Delivery has failed to these recipients or groups:</p></body></html>

--b1_exch--

--{boundary}
Content-Type: message/delivery-status

Reporting-MTA: dns;EXCH01.corp.example
Received-From-MTA: dns;mail.sender.example
Arrival-Date: Mon, 1 Dec 2026 09:30:00 +0000

Final-Recipient: rfc822;{to}
Action: failed
Status: 5.1.10
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup
X-Display-Name: Pat Doe

--{boundary}
Content-Type: text/rfc822-headers

Received: from mail.sender.example (203.0.113.20) by EXCH01.corp.example
 (10.0.0.5) with Microsoft SMTP Server id 15.2.1118.40; Mon, 1 Dec 2026
 09:30:00 +0000
From: Acme News <news@acme.example>
To: <{to}>
Subject: Hello
Date: Mon, 1 Dec 2026 09:29:59 +0000
Message-ID: {message_id}
MIME-Version: 1.0
Content-Type: text/plain

--{boundary}--
"""

"""Real handlers for the seed's queues: email over SMTP, bounces and the suppression
list, signed webhooks, mailbox warm-up and analytics. Enable them like any handler
module: `HANDLER_MODULES=app.handlers` (the default).

Importing this package registers the handlers (app.handlers.jobs); the services they
use live in the other modules and are the example to follow for handlers of your own:
a payload model per queue, one class per external system, outcomes raised as
PermanentFailure / Snooze / an ordinary exception, and tests against real servers.
"""

from app.handlers import jobs as jobs

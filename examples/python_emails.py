"""A plain-script example of the Python package.

    .venv/bin/pip install .                       # from the repository root
    .venv/bin/python examples/python_emails.py    # publishes 10 jobs
    cd examples && ../.venv/bin/cleats work python_emails:EmailWorker --workers 2 --threads 5
    # Ctrl-C (or kill -TERM <master pid>) drains and stops.
"""

import os

import cleats

cleats.configure(
    amqp=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"),
    handler=cleats.Maxretry,  # failed jobs are retried, then parked in emails-error
    retry_timeout=5000,
)


@cleats.from_queue("emails", content_type="application/json", threads=5)
class EmailWorker(cleats.Worker):
    def work(self, msg):
        self.logger.info("sending an email to %s", msg["to"])
        return self.ack()


if __name__ == "__main__":
    for i in range(10):
        EmailWorker.enqueue({"to": f"user{i}@example.com"})
    print("published 10 jobs to 'emails'")

"""The Python half of the demo: a worker as an app would write it.

Each processed signup is appended to $DEMO_OUT as "<pid> <id>" so the demo can show which
process did what.
"""

import os

import cleats

cleats.configure(amqp=os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672"),
                 exchange="cleats-demo", queue_options={"durable": False})


@cleats.from_queue("cleats.demo.python", content_type="application/json", threads=4, prefetch=50)
class SignupWorker(cleats.Worker):
    def work(self, msg):
        with open(os.environ["DEMO_OUT"], "a") as out:
            out.write(f"{os.getpid()} {msg['id']}\n")
        return self.ack()

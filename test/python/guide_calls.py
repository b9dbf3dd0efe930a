"""The fine-tuning guide's calls through the current openai Python SDK, against a tunelab server.

Run by test/python-sdk.test.ts as: python guide_calls.py DATASET BASE_MODEL (OPENAI_BASE_URL and
OPENAI_API_KEY in the environment). Prints one JSON object with what each call returned, for the
test to check.
"""
import json
import sys
import time

from openai import OpenAI

dataset, base_model = sys.argv[1], sys.argv[2]
client = OpenAI(max_retries=0)
seen = {}

file = client.files.create(file=open(dataset, "rb"), purpose="fine-tune")
# Bytes with no name: the SDK names the part "upload".
unnamed = client.files.create(file=open(dataset, "rb").read(), purpose="fine-tune")
for f in (file, unnamed):
    while client.files.retrieve(f.id).status == "uploaded":
        time.sleep(0.05)
seen["files"] = [client.files.retrieve(f.id).model_dump() for f in (file, unnamed)]

job = client.fine_tuning.jobs.create(training_file=file.id, model=base_model, suffix="py",
                                     hyperparameters={"n_epochs": 2})
doomed = client.fine_tuning.jobs.create(training_file=unnamed.id, model=base_model)
seen["cancelled"] = client.fine_tuning.jobs.cancel(doomed.id).status
seen["listed"] = [j.id for j in client.fine_tuning.jobs.list(limit=10)]

while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
    time.sleep(0.2)
seen["job"] = job.model_dump()
if job.status != "succeeded":
    sys.exit(f"the job ended {job.status}: {job.error}")
seen["events"] = [e.message for e in client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=100)]
seen["checkpoints"] = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)]

model = job.fine_tuned_model
messages = [{"role": "system", "content": "你是一个会讲笑话的天气助理。"},
            {"role": "user", "content": "今年武汉的冬天冷不冷?"}]
chat = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12)
seen["chat"] = chat.model_dump()
stream = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12, stream=True,
                                        stream_options={"include_usage": True})
chunks = list(stream)
seen["streamed"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
seen["streamed_usage"] = next(c.usage.model_dump() for c in chunks if c.usage)
completion = client.completions.create(model=model, prompt="今年", max_tokens=4, temperature=0)
seen["completion"] = completion.model_dump()
seen["deleted"] = client.models.delete(model).model_dump()
seen["models_after"] = [m.id for m in client.models.list()]
print(json.dumps(seen))

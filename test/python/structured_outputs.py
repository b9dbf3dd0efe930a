"""The Python SDK against a tunelab server (OPENAI_BASE_URL, OPENAI_API_KEY): structured outputs with a
pydantic model, a forced tool call, and a streamed Responses answer. Prints one JSON object."""

import json
import sys

from openai import OpenAI
from pydantic import BaseModel, Field

model = sys.argv[1]
client = OpenAI(max_retries=0)


class Weather(BaseModel):
    sunny: bool
    temperature: int = Field(ge=-40, le=50)


parsed = client.chat.completions.parse(
    model=model,
    messages=[{"role": "user", "content": "What is the weather like?"}],
    response_format=Weather,
    temperature=1,
    seed=11,
    n=10,
    max_tokens=60,
)

completion = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
        "additionalProperties": False}}}],
    tool_choice="required",
    temperature=0.8,
    max_tokens=80,
)
call = completion.choices[0].message.tool_calls[0]

events = [event.type for event in client.responses.create(model=model, input="Hello", max_output_tokens=4, stream=True)]

print(json.dumps({
    "parsed": [choice.message.parsed.model_dump() for choice in parsed.choices],
    "call": {"name": call.function.name, "arguments": json.loads(call.function.arguments)},
    "finish_reason": completion.choices[0].finish_reason,
    "events": events,
}))

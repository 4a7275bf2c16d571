"""Request and response bodies of the classifier API (`slimtext.serve.app`); FastAPI also turns
them into the schema at /openapi.json."""

from pydantic import BaseModel, ConfigDict, Field

# ---- request / response bodies (they also document the API in /openapi.json) ------------------


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "I hate you"}]}
    )
    text: str = Field(description="Text to classify; not empty, at most max_chars characters.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["I hate you", "Have a nice day"]}]},
    )
    texts: list[str] = Field(description="1 to max_batch texts, each as in /api/classify.")


class Prediction(BaseModel):
    label: str = Field(description="The most probable label.")
    probabilities: dict[str, float] = Field(description="Probability of every label (sums to 1).")


class ClassifyResponse(Prediction):
    latency_ms: float = Field(description="Server time to validate, run the model and format.")


class BatchResponse(BaseModel):
    results: list[Prediction] = Field(description="One prediction per input text, in order.")
    latency_ms: float = Field(description="Server time for the whole batch.")


class Health(BaseModel):
    status: str
    model: str
    backend: str | None = Field(None, description="predictor.backend if it has one, e.g. onnx")
    labels: list[str]
    max_chars: int
    max_batch: int


class ErrorBody(BaseModel):
    error: str = Field(description="What is wrong with the request, naming the field.")


ERRORS = {code: {"model": ErrorBody} for code in (400, 413, 422, 500)}

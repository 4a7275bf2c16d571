"""Request and response bodies of the classifier API (`slimtext.serve.app`); FastAPI also turns
them into the schema at /openapi.json."""

from pydantic import BaseModel, ConfigDict, Field

from slimtext.inference.base import INVISIBLE, SPACE_BEYOND_ECMA

# A text must hold something besides white space and zero-width characters (documented in the
# schema; the server checks it and answers 422). The app adds its own length and count limits
# (maxLength, maxItems, the explanation methods) to /openapi.json. The constraints live in the
# schema only: the server checks them itself, with messages that say what to do, see `slimtext.serve.app.document_limits`.
VISIBLE_TEXT = {"minLength": 1, "pattern": f"[^\\s{SPACE_BEYOND_ECMA}{INVISIBLE}]"}

# ---- request / response bodies (they also document the API in /openapi.json) ------------------


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "I hate you"}]}
    )
    text: str = Field(description="Text to classify; not empty, at most max_chars characters.",
                      json_schema_extra=VISIBLE_TEXT)
    threshold: float | None = Field(None, ge=0, le=1, description="Binary tasks: override the run's threshold.")


class BatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"texts": ["I hate you", "Have a nice day"]}]},
    )
    texts: list[str] = Field(description="1 to max_batch texts, each as in /api/classify.",
                             json_schema_extra={"minItems": 1})
    threshold: float | None = Field(None, ge=0, le=1, description="Binary tasks: override the run's threshold.")


class Prediction(BaseModel):
    label: str = Field(description="The verdict: binary tasks, the positive label when its probability >= "
                                   "threshold; otherwise the most probable label.")
    probabilities: dict[str, float] = Field(description="Calibrated probability of every label (sums to 1).")
    probability: float = Field(description="Calibrated probability of the verdict's label.")
    needs_review: bool = Field(description="Close to the threshold (within the review band): a human should look.")
    threshold: float | None = Field(None, description="Binary tasks: the threshold applied.")


class ClassifyResponse(Prediction):
    latency_ms: float = Field(description="Server time to validate, run the model and format.")


class BatchResponse(BaseModel):
    results: list[Prediction] = Field(description="One prediction per input text, in order.")
    latency_ms: float = Field(description="Server time for the whole batch.")


class ExplainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"text": "I hate you", "method": "auto"}]}
    )
    text: str = Field(description="Text to explain; limited in characters and words (see /healthz).",
                      json_schema_extra=VISIBLE_TEXT)
    method: str = Field("auto", description="auto, occlusion (any backend) or integrated-gradients (torch).",
                        json_schema_extra={"enum": ["auto", "occlusion", "integrated-gradients"]})
    threshold: float | None = Field(None, ge=0, le=1, description="Binary tasks: override the run's threshold.")


class WordScore(BaseModel):
    word: str
    start: int = Field(description="Character offset of the word in the text.")
    end: int
    scores: dict[str, float] = Field(description="Per label: how much the word pushed the text towards it.")


class ExplainResponse(Prediction):
    method: str = Field(description="The explanation method used.")
    words: list[WordScore]
    latency_ms: float


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(description="The text the model judged.")
    model_label: str = Field(description="The label the model gave.")
    corrected_label: str = Field(description="The label a person says is right.")


class FeedbackResponse(BaseModel):
    saved: bool


class Health(BaseModel):
    status: str
    model: str
    backend: str | None = Field(None, description="predictor.backend if it has one, e.g. onnx")
    labels: list[str]
    max_chars: int
    max_batch: int
    threshold: float | None = Field(None, description="Binary tasks: the threshold the verdict uses.")
    review_band: float = Field(0.1, description="needs_review within this distance of the threshold.")
    batching: bool = Field(False, description="Whether concurrent requests share model calls.")


class ErrorBody(BaseModel):
    error: str = Field(description="What is wrong with the request, naming the field.")


ERRORS = {code: {"model": ErrorBody} for code in (400, 404, 413, 415, 422, 500)}

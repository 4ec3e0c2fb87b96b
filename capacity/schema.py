"""What `benchmarks/run.py --json` writes and the capacity planner reads, as one set of models: run.py
builds its result through them and the planner validates the file with them, so a field renamed or
dropped on one side fails on the other instead of reading as missing.

Times are seconds, costs are seconds of one call alone in-process on the machine that ran it.
Optional fields are those an older run.py did not write; the planner falls back where they are
None (`capacity.scenarios`), and run.py today writes every one of them.
"""

from __future__ import annotations

import json

from pydantic import BaseModel


class Input(BaseModel):
    """A clip the clients speak: jfk.flac, then questions spoken by the Piper voice."""

    name: str
    seconds: float
    speech_end_s: float  # its last voiced sample (Silero VAD)


class StageSeconds(BaseModel):
    """A number per stage (the floor's parts; real-time factors)."""

    asr: float
    llm: float
    tts: float
    animator: float


class StageFit(BaseModel):
    """A line fitted over calls of several sizes, one at a time: fixed_s + slope x size."""

    fixed_s: float  # can dip below zero: the planner clips it
    r2: float
    samples: int


class AsrCost(StageFit):
    per_audio_s: float  # per second of input audio


class LlmCost(StageFit):
    per_token_s: float
    first_token_s: float
    tokens_per_speech_s: float  # tokens written per second of speech they make


class TtsCost(StageFit):
    per_audio_s: float  # per second of output audio
    first_chunk_s: float
    chunk_s: float | None = None  # median seconds of audio per streamed chunk (Piper's phonemizer cuts)


class AnimatorCost(StageFit):
    per_audio_s: float
    first_fragment_s: float


class Endpointing(BaseModel):
    end_silence_s: float


class RepliesSeen(BaseModel):
    """Medians over the costs phase's inputs and replies."""

    utterance_s: float
    reply_tokens: float
    reply_speech_s: float
    reply_sentences: float
    first_sentence_speech_s: float


class Costs(BaseModel):
    """The cost model the planner simulates this machine with."""

    asr: AsrCost
    llm: LlmCost
    tts: TtsCost
    animator: AnimatorCost
    endpointing: Endpointing
    workload: RepliesSeen


class TurnRecord(BaseModel):
    """One turn of a concurrency run as the planner replays it (`run.turn_record`): when its session
    began it (seconds into the run), the client's cycle, voice to face and its parts, the reply's
    shape, and the turns started early and cancelled (seconds into the clip)."""

    session: int
    input: int  # index into BenchResult.inputs
    began_s: float
    opened_s: float
    streamed_s: float
    voiced_s: float
    done_s: float
    v2f_s: float
    endpointing_s: float
    asr_s: float
    rest_s: float
    reply_speech_s: float
    reply_sentences: int
    first_sentence_speech_s: float
    cancelled_starts: list[tuple[float, float]]


class Concurrency(BaseModel):
    """`sessions` clients talking at once over /ws, turn after turn, no think time."""

    sessions: int
    turns: int
    v2f_p50_s: float
    v2f_p95_s: float
    turns_per_min: float
    reply_speech_s: float | None = None  # medians over its turns
    reply_sentences: float | None = None
    cpu_per_turn_s: dict[str, float] | None = None  # by process group (benchmarks/cpu_usage.py)
    cpu_busy_share: float | None = None
    turns_detail: list[TurnRecord] | None = None


class PerInput(BaseModel):
    input: str  # Input.name
    floor_s: float
    ttfs_s: float
    ttfs_local_s: float


class InputSummary(BaseModel):
    """Voice to face over one session's turns of one input."""

    input: str  # Input.name
    turns: int
    v2f_p50_s: float
    v2f_p95_s: float
    endpointing_p50_s: float
    asr_p50_s: float
    rest_p50_s: float


class V2fParts(BaseModel):
    endpointing: float
    asr: float
    rest: float


class Ttfs(BaseModel):
    ttfs_s: float
    ttfs_over_floor: float


class FirstSentenceFirst(BaseModel):
    """The shipped thread settings against run.py's ALTERNATIVE, turns alternating."""

    shipped: Ttfs
    alternative: Ttfs
    alternative_over_shipped: float
    settings: dict[str, dict[str, int]]


class Machine(BaseModel):
    date: str
    commit: str
    cpus: int | None
    load_before: list[float]
    load_after: list[float]
    quick: bool
    runs: int


class BenchResult(BaseModel):
    """The whole of `run.py --json` (what each number means: run.py's docstring)."""

    inputs: list[Input]
    floor_s: float
    floor_parts_s: StageSeconds
    ttfs_s: float
    ttfs_local_s: float
    ttfs_over_floor: float
    serve_overhead: float
    per_input: list[PerInput]
    first_sentence_first: FirstSentenceFirst | None = None  # not with --quick or --no-ab
    streaming_over_sequential: float
    sequential_first_segment_s: float
    streamed_first_segment_s: float
    sequential_sentences: int
    underruns: int
    long_reply_speech_s: float
    long_reply_fragments: int
    v2f_p50_s: float
    v2f_p95_s: float
    v2f_parts_p50_s: V2fParts
    v2f_per_input: list[InputSummary]
    concurrency: list[Concurrency]
    costs: Costs
    rtf: StageSeconds
    machine: Machine

    @classmethod
    def from_json(cls, text: str) -> BenchResult:
        return cls.model_validate(json.loads(text))

    def to_json(self) -> str:
        """As run.py writes it: json.dumps, not pydantic's serializer, which would write a NaN (a
        number a run could not measure) as null, and None fields left out."""
        return json.dumps(self.model_dump(exclude_none=True), indent=2)

    def one_session(self) -> Concurrency | None:
        """The concurrency run with one session, if there was one."""
        return next((c for c in self.concurrency if c.sessions == 1), None)

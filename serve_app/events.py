"""The protocol, typed: every event the server sends and every control message a client may send.

A turn yields these models (a segment's media bytes travel beside its event, never inside it); the
transports only serialise them: HTTP as NDJSON lines, the WebSocket as JSON text followed by one
binary message for each `segment` and `idle`, the Ingress handle as dicts. `docs/protocol.md` is
generated from this module (`python -m serve_app.docgen`), so the reference cannot drift from it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class Event(BaseModel):
    """Server -> client. Fields that are None are left out of the JSON."""

    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# ---- session-level events (WebSocket) ---------------------------------------------------------


class SessionOpened(Event):
    """First message on every WebSocket: the conversation's id and its current choices."""

    type: Literal["session"] = "session"
    session_id: str = Field(description="the conversation; GET /api/v1/sessions/{id} shows its history")
    avatar_id: str
    voice_id: str
    language: str
    languages: list[str] = Field(description="what the configured ASR, LLM and TTS all support")
    voice_cloning: bool = Field(description="false: the TTS has one built-in voice (Piper)")
    resumed: bool = Field(
        False, description="the conversation named by /ws?session_id=... continues (history kept); "
        "false: a new one (the id was unknown or had expired)"
    )


class SettingsApplied(Event):
    """The session's choices after a `settings` message was accepted."""

    type: Literal["settings"] = "settings"
    avatar_id: str
    voice_id: str
    language: str


class SpeechStarted(Event):
    """Server VAD heard speech begin."""

    type: Literal["speech_start"] = "speech_start"
    barge_in: bool = Field(description="a turn was running: it is cancelled (see `cancelled`)")


class UtteranceEnded(Event):
    """The user's turn ended; a turn starts on it."""

    type: Literal["utterance_end"] = "utterance_end"
    duration_s: float
    speculative: bool = Field(
        False, description="the turn model called it complete after a short pause; speech that "
        "follows cancels the turn and merges both utterances"
    )


class Cancelled(Event):
    """The running turn stopped before its end."""

    type: Literal["cancelled"] = "cancelled"
    reason: Literal["client", "barge_in", "new_turn"]
    merged: bool = Field(
        False, description="nothing was said yet: the next utterance continues this one and its "
        "transcript repeats it"
    )


class Pong(Event):
    type: Literal["pong"] = "pong"


class IdleVideo(Event):
    """Listening video (mouth at rest), followed by one binary message of `bytes` bytes."""

    type: Literal["idle"] = "idle"
    duration_s: float
    mime: str
    bytes: int


# ---- a turn's events (HTTP and WebSocket) -------------------------------------------------------


class TurnStarted(Event):
    type: Literal["turn"] = "turn"
    turn_id: str
    session_id: str


class Transcript(Event):
    """What ASR heard ("" when nothing: an `error` with code no_speech follows)."""

    type: Literal["transcript"] = "transcript"
    text: str


class ReplyDelta(Event):
    """A piece of the reply's text as the LLM writes it."""

    type: Literal["reply"] = "reply"
    text: str


class Segment(Event):
    """One media fragment (fragmented MP4: H.264 + AAC) of the spoken reply, in order. Over the
    WebSocket one binary message of `bytes` bytes follows; over HTTP it is fetched from `url`."""

    type: Literal["segment"] = "segment"
    index: int = Field(description="0, 1, 2, ... within the turn")
    sentence: int = Field(description="the reply's sentence this fragment speaks")
    last: bool = Field(description="the sentence's last fragment")
    text: str = Field(description="the sentence")
    duration_s: float
    mime: str
    rung: int = Field(
        0, description="the animator's quality rung that made it: 0 the best; higher, a lower frame rate "
        "or size, chosen so that it arrives before the fragment before it has finished playing"
    )
    hold_s: float | None = Field(
        None, description="a turn's first fragment only: the jitter buffer the server expects, from the "
        "last turns of this session and of every session on its replica; the page starts playing this "
        "long after it arrived, or longer if its own arrivals say so"
    )
    bytes: int | None = Field(None, description="WebSocket: the size of the binary message that follows")
    url: str | None = Field(None, description="HTTP: GET it within limits.segment_ttl_s")


class Span(BaseModel):
    """When a stage worked on one sentence or fragment, in seconds from the turn's start."""

    stage: str
    start: float
    end: float
    sentence: int | None = None
    fragment: int | None = None


class Done(Event):
    """The turn completed; per-stage seconds (asr, llm_first_token, llm, tts, animator, total) and
    seconds from the turn's start until its first clause went to TTS (first_clause), its first audio
    came back (first_audio) and its first fragment was made (first_segment)."""

    type: Literal["done"] = "done"
    timings: dict[str, float]
    spans: list[Span] | None = Field(None, description="Ingress handle only: the turn's timeline")


class Error(Event):
    """Something the client should know went wrong; the session goes on."""

    type: Literal["error"] = "error"
    code: str = Field(description="stable and machine-readable, e.g. no_speech, bad_message, overloaded")
    message: str = Field(description="for a person")


TurnEvent = TurnStarted | Transcript | ReplyDelta | Segment | Done | Error
SERVER_EVENTS: tuple[type[Event], ...] = (
    SessionOpened, SettingsApplied, SpeechStarted, UtteranceEnded, Cancelled, Pong, IdleVideo,
    TurnStarted, Transcript, ReplyDelta, Segment, Done, Error,
)


# ---- client -> server (WebSocket text messages) ----------------------------------------------------


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Settings(_Message):
    """Choose the avatar, voice or language; answered by `settings`, or `error` naming the problem."""

    type: Literal["settings"]
    avatar_id: str | None = None
    voice_id: str | None = None
    language: str | None = None


class Mic(_Message):
    """on: binary messages are raw PCM (s16le, 16 kHz, mono, at most 1 s each) that the server
    endpoints (hands-free); off: a binary message is one whole audio file (WAV, FLAC, MP3, ...)."""

    type: Literal["mic"]
    on: bool


class PushToTalk(_Message):
    """Over the PCM stream (mic on): down interrupts the avatar and starts an utterance; up ends it."""

    type: Literal["ptt"]
    down: bool


class IdleRequest(_Message):
    """The player runs low: send this many seconds of listening video (capped by the server)."""

    type: Literal["idle"]
    seconds: float | None = Field(None, gt=0)


class Interrupted(_Message):
    """Playback stopped after `heard` sentences had started; the last one cut short if `cut`. The
    history keeps only what was heard (and "…"), if that turn's exchange is still its last (a turn
    withdrawn or never remembered leaves the history alone)."""

    type: Literal["interrupted"]
    turn_id: str | None
    heard: int = Field(ge=0)
    cut: bool = False


class Cancel(_Message):
    type: Literal["cancel"]


class Ping(_Message):
    type: Literal["ping"]


ClientMessage = Annotated[
    Union[Settings, Mic, PushToTalk, IdleRequest, Interrupted, Cancel, Ping], Field(discriminator="type")
]
CLIENT_MESSAGES = (Settings, Mic, PushToTalk, IdleRequest, Interrupted, Cancel, Ping)
_client = TypeAdapter(ClientMessage)


class BadMessage(ValueError):
    """A client message that is not one of CLIENT_MESSAGES; the text says what was wrong."""


def parse_client_message(text: str) -> Settings | Mic | PushToTalk | IdleRequest | Interrupted | Cancel | Ping:
    kinds = " | ".join(m.model_fields["type"].annotation.__args__[0] for m in CLIENT_MESSAGES)
    try:
        return _client.validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        if not first["loc"] or first["type"] == "json_invalid":
            raise BadMessage(f'expected a JSON object with "type": {kinds}') from None
        if first["type"].startswith("union_tag"):
            raise BadMessage(f'"type" must be one of: {kinds}') from None
        raise BadMessage(f"{where}: {first['msg']}") from None
    except RecursionError:  # absurdly deep nesting
        raise BadMessage(f'expected a JSON object with "type": {kinds}') from None

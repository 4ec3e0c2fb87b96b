// One <video>, one MediaSource, one SourceBuffer: every fragment (a complete fragmented MP4 that
// starts at t=0; a sentence arrives as one or more) is placed on the timeline with timestampOffset,
// so speech and listening video play back to back without gaps. Speech replaces listening video already buffered ahead (the cut is a
// little after the playhead), and stop() drops buffered speech at once for barge-in.
//
// A small jitter buffer: a turn's speech starts `hold` seconds after its first fragment arrived, where
// `hold` is the largest of the last turns' needs, a turn's need being how much later than its first
// arrival playback would have had to start for no fragment to arrive after the one before had ended.
// A session whose fragments come in time waits for nothing. The server keeps the same figure from
// its send times (serve_app/playback.py, whose constants these are).
const LEAD_S = 0.12;   // how far ahead of the playhead new speech may start
const KEEP_S = 20;     // seconds of played media kept behind the playhead
const MAX_HOLD_S = 1.0, HOLD_STEP_S = 0.05, TURNS_REMEMBERED = 5, LATE_S = 0.02;

/** How long after the first fragment's arrival a turn must start playing for none to stall (s). */
export function need(arrivals, durations) {
  let worst = 0, played = 0;
  arrivals.forEach((t, k) => { worst = Math.max(worst, t - arrivals[0] - played); played += durations[k]; });
  return worst >= LATE_S ? worst : 0;
}

/** The jitter buffer for the next turn (s), from the needs of the turns before it. */
export function holdFor(needs) {
  const worst = Math.max(0, ...needs.slice(-TURNS_REMEMBERED));
  const steps = Math.ceil(Math.round(worst * 1000) / Math.round(HOLD_STEP_S * 1000));
  return Math.min(MAX_HOLD_S, steps * HOLD_STEP_S);
}

export class SegmentPlayer {
  constructor(video) {
    this.video = video;
    this.ops = [];            // pending {bytes, mime, duration, kind} appends
    this.end = 0;             // timeline end of what is buffered
    this.lastKind = "idle";
    this.speech = [];         // [start, end, tag] ranges of speech on the timeline
    this.needs = [];          // recent turns' needs (s): what sizes the jitter buffer
    this.turn = null;         // this turn's arrivals: {tag, arrivals, durations} (seconds)
    this.hold = 0;            // the current turn's jitter buffer (s)
    this.buffer = null;
    this.source = new MediaSource();
    this.source.addEventListener("sourceopen", () => this.pump(), { once: true });
    video.src = URL.createObjectURL(this.source);
  }

  /** Seconds buffered ahead of the playhead. */
  get ahead() { return Math.max(0, this.end - this.video.currentTime); }

  /** True while the playhead is inside a speech segment. */
  get speaking() {
    const t = this.video.currentTime;
    return this.speech.some(([a, b]) => t >= a - 0.05 && t < b);
  }

  /** True while speech is buffered ahead of (or under) the playhead. */
  get speechAhead() {
    return this.ops.some((op) => op.kind === "speech") || this.speech.some(([, b]) => b > this.video.currentTime);
  }

  /** How many sentences of the speech tagged `tag` have started playing (fully or partly heard). */
  started(tag) {
    const t = this.video.currentTime;
    return new Set((this.log || []).filter(([g, a]) => g === tag && a <= t).map((e) => e[3])).size;
  }

  append(bytes, mime, duration, kind, tag = null, sentence = 0, hint = 0) {
    const op = { bytes, mime, duration, kind, tag, sentence };
    if (kind === "speech") this.arrived(op, hint);
    this.ops.push(op);
    this.pump();
  }

  /** A speech fragment arrived: the turn's first one is held `hold` seconds (`op.due`): from this
   * page's own arrivals, or the server's figure (`hint`, the segment's hold_s) when that is longer. */
  arrived(op, hint = 0) {
    const now = performance.now() / 1000;
    if (this.turn?.tag !== op.tag) {
      this.endTurn();
      this.hold = Math.max(holdFor(this.needs), Math.min(MAX_HOLD_S, hint || 0));
      this.turn = { tag: op.tag, arrivals: [], durations: [] };
      op.due = now + this.hold;
    }
    this.turn.arrivals.push(now);
    this.turn.durations.push(op.duration);
  }

  /** The turn's need joins the history once its last fragment has come. */
  endTurn() {
    if (this.turn && this.turn.arrivals.length > 1) {
      this.needs = [...this.needs, need(this.turn.arrivals, this.turn.durations)].slice(-TURNS_REMEMBERED);
    }
    this.turn = null;
  }

  /** Barge-in: drop everything not yet played; listening video follows. */
  stop() {
    this.ops = this.ops.filter((op) => op.kind !== "speech");
    const t = this.video.currentTime;
    this.speech = this.speech.filter(([a]) => a < t).map(([a, b, g]) => [a, Math.min(b, t), g]);
    this.cutAt(t + 0.04);
  }

  cutAt(at) {
    if (at >= this.end) return;
    this.end = at;
    this.pendingRemove = [at, Infinity];
    this.pump();
  }

  pump() {
    if (this.source.readyState !== "open" || (this.buffer && this.buffer.updating)) return;
    if (this.pendingRemove && this.buffer) {
      const [a, b] = this.pendingRemove;
      this.pendingRemove = null;
      this.buffer.remove(a, b);
      return;  // updateend pumps again
    }
    const op = this.ops[0];
    if (!op) return this.trim();
    if (!this.buffer) {
      this.buffer = this.source.addSourceBuffer(op.mime);
      this.buffer.addEventListener("updateend", () => this.pump());
      this.buffer.addEventListener("error", () => console.warn("SourceBuffer error"));
    }
    const now = this.video.currentTime;
    const wait = op.due ? op.due - performance.now() / 1000 : 0;
    if (op.kind === "speech" && this.lastKind === "idle" && wait > 0) {
      clearTimeout(this.holding);  // the jitter buffer: listening video plays on meanwhile
      this.holding = setTimeout(() => this.pump(), wait * 1000);
      return;
    }
    if (op.kind === "speech" && this.lastKind === "idle" && this.end > now + LEAD_S) {
      this.cutAt(now + LEAD_S);  // speech starts now, not after the listening video queued ahead
      return;
    }
    this.ops.shift();
    // Always exactly at the end: the playhead stalls at the end of the buffer when it runs dry, so
    // appending there never leaves a gap (a gap would stall playback for good).
    const start = this.end;
    this.buffer.timestampOffset = start;
    this.buffer.appendBuffer(op.bytes);
    this.end = start + op.duration;
    this.lastKind = op.kind;
    if (op.kind === "speech") {
      this.speech.push([start, this.end, op.tag]);
      this.log = [...(this.log || []).slice(-199), [op.tag, start, performance.now(), op.sentence]];  // recent speech appends
    }
    this.speech = this.speech.filter(([, b]) => b > now - 1);
    this.video.play().catch(() => {});
  }

  trim() {
    const t = this.video.currentTime;
    if (this.buffer && !this.buffer.updating && t > KEEP_S * 2 && this.buffer.buffered.length
        && this.buffer.buffered.start(0) < t - KEEP_S * 2) {
      this.buffer.remove(0, t - KEEP_S);
    }
  }
}

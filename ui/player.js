// One <video>, one MediaSource, one SourceBuffer: every fragment (a complete fragmented MP4 that
// starts at t=0; a sentence arrives as one or more) is placed on the timeline with timestampOffset,
// so speech and listening video play back to back without gaps. Speech replaces listening video already buffered ahead (the cut is a
// little after the playhead), and stop() drops buffered speech at once for barge-in.
const LEAD_S = 0.12;   // how far ahead of the playhead new speech may start
const KEEP_S = 20;     // seconds of played media kept behind the playhead

export class SegmentPlayer {
  constructor(video) {
    this.video = video;
    this.ops = [];            // pending {bytes, mime, duration, kind} appends
    this.end = 0;             // timeline end of what is buffered
    this.lastKind = "idle";
    this.speech = [];         // [start, end, tag] ranges of speech on the timeline
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

  append(bytes, mime, duration, kind, tag = null, sentence = 0) {
    this.ops.push({ bytes, mime, duration, kind, tag, sentence });
    this.pump();
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

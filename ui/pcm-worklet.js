// Runs on the audio thread: mixes the mic to mono, resamples from the context's rate to 16 kHz
// (linear interpolation; the voice band is far below the new Nyquist) and posts 100 ms Int16 frames.
// 100 ms, not 40: each message costs the proxy and the ingress about the same whatever its size, so
// 10 a second instead of 25 takes a third off what a listening session costs the front door
// (docs/benchmarks.md, "Many sessions"); the server hears the end of speech 30 ms later on average
// (60 ms at most), against voice to face of seconds.
const OUT_RATE = 16000, FRAME = 1600;

class PcmSender extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / OUT_RATE;  // input samples per output sample
    this.pos = 0;                        // read position in `this.prev`+input, in input samples
    this.prev = 0;                       // last input sample of the previous block
    this.frame = new Int16Array(FRAME);
    this.n = 0;
  }
  process(inputs) {
    const channels = inputs[0];
    if (!channels || !channels.length) return true;
    const len = channels[0].length;
    const mono = new Float32Array(len);
    for (const ch of channels) for (let i = 0; i < len; i++) mono[i] += ch[i] / channels.length;
    // sample at x in [-1, len): x = -1 is the previous block's last sample
    while (this.pos < len - 1) {
      const i = Math.floor(this.pos), f = this.pos - i;
      const a = i < 0 ? this.prev : mono[i], b = mono[i + 1];
      const s = Math.max(-1, Math.min(1, a + (b - a) * f));
      this.frame[this.n++] = s < 0 ? s * 32768 : s * 32767;
      if (this.n === FRAME) {
        this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
        this.frame = new Int16Array(FRAME); this.n = 0;
      }
      this.pos += this.step;
    }
    this.pos -= len;
    this.prev = mono[len - 1];
    return true;
  }
}
registerProcessor("pcm-sender", PcmSender);

// The microphone as a stream of 16 kHz Int16 frames (see pcm-worklet.js). Echo cancellation keeps
// the avatar's own voice from the speakers out of it, so it cannot barge in on itself.
export class Mic {
  constructor(onFrame) { this.onFrame = onFrame; this.ctx = null; this.stream = null; }

  get on() { return this.ctx !== null; }

  async start() {
    if (this.ctx) return;
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    const ctx = new AudioContext();
    await ctx.audioWorklet.addModule(new URL("pcm-worklet.js", import.meta.url));
    const node = new AudioWorkletNode(ctx, "pcm-sender");
    node.port.onmessage = (e) => this.onFrame(e.data);
    ctx.createMediaStreamSource(this.stream).connect(node);
    this.ctx = ctx;
  }

  stop() {
    this.stream?.getTracks().forEach((t) => t.stop());
    this.ctx?.close();
    this.ctx = null; this.stream = null;
  }
}

// The browser side of a conversation: record an utterance, send it over /ws, show the transcript as
// it streams, and append each media segment to one MediaSource so sentences play back to back.
const $ = (id) => document.getElementById(id);
const video = $("avatar"), statusPill = $("status"), mic = $("mic"), transcript = $("transcript");

let ws, player, recorder, chunks = [], avatarLine = null;

function setStatus(text) { statusPill.textContent = text; }
function showError(text) { $("error").textContent = text; $("error").hidden = !text; }
function addLine(cls, text) {
  const li = document.createElement("li");
  li.className = cls; li.textContent = text; transcript.append(li);
  li.scrollIntoView({ block: "end" });
  return li;
}

// Segments are complete fragmented MP4s; each starts at t=0, so it is placed after the previous one.
class SegmentPlayer {
  constructor(video) {
    this.video = video; this.queue = []; this.end = 0; this.buffer = null;
    this.source = new MediaSource();
    video.src = URL.createObjectURL(this.source);
  }
  append(bytes, mime) {
    this.queue.push(bytes);
    if (!this.buffer && this.source.readyState === "open") {
      this.buffer = this.source.addSourceBuffer(mime);
      this.buffer.addEventListener("updateend", () => this.pump());
    }
    this.pump();
  }
  pump() {
    if (!this.buffer || this.buffer.updating || !this.queue.length) return;
    if (this.end < this.video.currentTime) this.end = this.video.currentTime;  // after a pause in speech
    this.buffer.timestampOffset = this.end;
    this.buffer.appendBuffer(this.queue.shift());
  }
  added(duration) { this.end += duration; this.video.play().catch(() => {}); }
}

function connect() {
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.binaryType = "arraybuffer";
  let pending = null;  // the segment event whose bytes come next
  ws.onopen = () => { setStatus("idle"); showError(""); };
  ws.onclose = () => { setStatus("disconnected"); setTimeout(connect, 2000); };
  ws.onmessage = (msg) => {
    if (msg.data instanceof ArrayBuffer) {
      if (pending) { player.append(msg.data, pending.mime); player.added(pending.duration_s); pending = null; }
      return;
    }
    const ev = JSON.parse(msg.data);
    if (ev.type === "transcript") { addLine("user", ev.text || "(nothing heard)"); setStatus("thinking"); avatarLine = null; }
    else if (ev.type === "reply") { avatarLine ??= addLine("avatar", ""); avatarLine.textContent += ev.text; }
    else if (ev.type === "segment") { pending = ev; setStatus("speaking"); }
    else if (ev.type === "done") { setStatus("idle"); }
    else if (ev.type === "error") { showError(ev.message); setStatus("idle"); }
  };
}

async function startRecording() {
  if (recorder?.state === "recording") return;
  let stream;
  try { stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true } }); }
  catch { showError("Microphone permission was denied."); return; }
  chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => chunks.push(e.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((t) => t.stop());
    send(await new Blob(chunks).arrayBuffer());
  };
  recorder.start();
  mic.setAttribute("aria-pressed", "true"); setStatus("listening");
}
function stopRecording() {
  if (recorder?.state !== "recording") return;
  recorder.stop(); mic.setAttribute("aria-pressed", "false");
}
function send(buffer) {
  if (ws?.readyState !== WebSocket.OPEN) { showError("Not connected to the server."); return; }
  player ??= new SegmentPlayer(video);
  showError(""); setStatus("thinking"); ws.send(buffer);
}

mic.addEventListener("pointerdown", startRecording);
mic.addEventListener("pointerup", stopRecording);
mic.addEventListener("pointerleave", stopRecording);
document.addEventListener("keydown", (e) => { if (e.code === "Space" && !e.repeat && e.target === document.body) { e.preventDefault(); startRecording(); } });
document.addEventListener("keyup", (e) => { if (e.code === "Space" && e.target === document.body) { e.preventDefault(); stopRecording(); } });
$("file").addEventListener("change", async (e) => { const f = e.target.files[0]; if (f) send(await f.arrayBuffer()); e.target.value = ""; });
connect();

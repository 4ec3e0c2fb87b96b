// The page: one WebSocket per conversation. The mic streams 16 kHz PCM (hands-free: the server's
// VAD ends each utterance; push-to-talk: Space or holding the button), replies stream in as text and
// as media segments, and the player keeps the avatar moving with listening video in between.
import { Mic } from "./mic.js";
import { SegmentPlayer } from "./player.js";

// Every URL is relative to the app's root (this module's folder's parent), so the page also works
// behind a route prefix (e.g. Serve's route_prefix /avatar, opened as /avatar/).
const BASE = new URL("..", import.meta.url);

// With `security.auth_token` set, open the page as .../?access_token=TOKEN once: the token is kept
// for this tab (sessionStorage) and taken out of the address bar; requests send it as a bearer
// token, the WebSocket as ?access_token= (browsers cannot set its headers). It is never logged.
const query = new URLSearchParams(location.search);
if (query.has("access_token")) {
  sessionStorage.setItem("avatar-token", query.get("access_token"));
  query.delete("access_token");
  history.replaceState(null, "", location.pathname + (query.size ? `?${query}` : "") + location.hash);
}
const token = () => sessionStorage.getItem("avatar-token");
async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  if (token()) headers.set("Authorization", `Bearer ${token()}`);
  const r = await fetch(new URL(path, BASE), { ...init, headers });
  if (r.status === 401) { state.unauthorized = true; showBanner(NEEDS_TOKEN); }
  return r;
}
const NEEDS_TOKEN = "This server needs an access token: open the page with ?access_token=… added to its address.";
function wsUrl() {
  const url = new URL("ws", BASE);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (token()) url.searchParams.set("access_token", token());
  // a reconnect continues the same conversation, on whichever replica answers
  if (state.sessionId) url.searchParams.set("session_id", state.sessionId);
  return url;
}

const $ = (id) => document.getElementById(id);
const video = $("avatar"), pill = $("pill"), statusText = $("status"), micButton = $("mic");
const transcript = $("transcript"), banner = $("banner"), timingsBox = $("timings");

const state = {
  ws: null, connected: false, retries: 0, handsFree: false, ptt: false, thinking: false,
  sessionId: null, lostTurn: false,
  avatarLine: null, micBlocked: false, settings: JSON.parse(localStorage.getItem("avatar-settings") || "{}"),
};
let player = null;
const mic = new Mic((frame) => {
  if ((state.handsFree || state.ptt) && state.ws?.readyState === WebSocket.OPEN) state.ws.send(frame);
});

// ---- status ---------------------------------------------------------------------------------

function currentState() {
  if (!state.connected) return state.retries ? "offline" : "connecting";
  if (player?.speaking) { state.thinking = false; return "speaking"; }
  if (state.thinking) return "thinking";
  if (state.handsFree || state.ptt) return "listening";
  return "idle";
}
function render() {
  const s = currentState();
  if (statusText.textContent !== s) statusText.textContent = s;
  pill.dataset.state = s;
  micButton.setAttribute("aria-pressed", String(state.handsFree || state.ptt));
  micButton.classList.toggle("blocked", state.micBlocked);
  const hint = state.micBlocked ? "The microphone is blocked."
    : state.handsFree ? "Just talk; interrupt any time. Click the mic to stop."
    : state.ptt ? "Talking… release Space to send."
    : "Click the mic to talk hands-free, or hold Space to talk.";
  if ($("hint").textContent !== hint) $("hint").textContent = hint;
  micButton.setAttribute("aria-label", state.handsFree
    ? "Microphone on: stop the hands-free conversation" : "Microphone: start hands-free conversation");
}
setInterval(() => { render(); feed(); }, 100);

function showBanner(text, kind = "error") {
  banner.textContent = text || ""; banner.hidden = !text; banner.dataset.kind = kind;
}
function showTimings(t) {
  const names = { asr: "Speech recognition", llm_first_token: "First word", tts: "Voice", animator: "Animation",
    first_segment: "First audio", total: "Whole turn" };
  timingsBox.replaceChildren(...Object.entries(names).filter(([k]) => k in t).map(([k, label]) => {
    const row = document.createElement("div");
    row.innerHTML = `<span></span><b></b>`;
    row.firstChild.textContent = label; row.lastChild.textContent = `${Math.round(t[k] * 1000)} ms`;
    return row;
  }));
}
const toggleTimings = (open) => { timingsBox.hidden = !open; pill.setAttribute("aria-expanded", String(open)); };
pill.addEventListener("mouseenter", () => toggleTimings(true));
pill.addEventListener("mouseleave", () => toggleTimings(false));
pill.addEventListener("focus", () => toggleTimings(true));
pill.addEventListener("blur", () => toggleTimings(false));
pill.addEventListener("click", () => toggleTimings(timingsBox.hidden));

// ---- transcript -----------------------------------------------------------------------------

function addLine(who, text) {
  $("empty").hidden = true;
  const li = document.createElement("li");
  li.className = who;
  const label = document.createElement("span");
  label.className = "who"; label.textContent = who === "user" ? "You" : "Avatar";
  const body = document.createElement("p");
  body.textContent = text;
  li.append(label, body);
  transcript.append(li);
  transcript.scrollTop = transcript.scrollHeight;
  return body;
}

// ---- connection -----------------------------------------------------------------------------

function connect() {
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  let pending = null;  // the segment/idle event whose bytes come next
  ws.onopen = () => {  // "idle" waits for the session event: the server holds the conversation then
    state.retries = 0; showBanner("");
    if (player) URL.revokeObjectURL(video.src);
    player = window.__player = new SegmentPlayer(video); state.turnId = null;
    applyMuted();
    ws.send(JSON.stringify({ type: "settings", ...state.settings }));
    if (state.handsFree) ws.send(JSON.stringify({ type: "mic", on: true }));
  };
  ws.onclose = (e) => {
    state.lostTurn ||= state.thinking || Boolean(player?.speaking);  // a turn was running: it ends here
    state.connected = false; state.thinking = false; state.idlePending = false;
    const busy = e.code === 1013;
    const delay = Math.min(15, 2 ** state.retries++) * (busy ? 2 : 1);
    showBanner(busy ? `The server is busy. Trying again in ${delay} s…`
      : state.unauthorized ? NEEDS_TOKEN
      : `Can't reach the server. Reconnecting in ${delay} s…`, busy ? "busy" : "error");
    setTimeout(connect, delay * 1000);
  };
  ws.onmessage = (msg) => {
    if (msg.data instanceof ArrayBuffer) {
      if (pending) {
        const kind = pending.type === "segment" ? "speech" : "idle";
        if (kind === "idle") state.idlePending = false;
        if (kind === "idle" || state.turnId !== state.stoppedTurn) {  // never replay an interrupted turn
          player.append(msg.data, pending.mime, pending.duration_s, kind, state.turnId, pending.sentence, pending.hold_s);
        }
        pending = null;
      }
      return;
    }
    handle(JSON.parse(msg.data), (ev) => { pending = ev; });
  };
}

function handle(ev, expectBytes) {
  switch (ev.type) {
    case "session":
      state.connected = true;
      document.body.dataset.session = state.sessionId = ev.session_id;  // GET /api/v1/sessions/{id}
      document.body.dataset.resumed = ev.resumed;
      if (state.lostTurn) {
        showBanner(ev.resumed ? "Reconnected. The connection dropped mid-answer; the conversation goes on."
          : "Reconnected, but the earlier conversation has expired: starting afresh.", "busy");
        state.lostTurn = false;
      }
      fillLanguages(ev.languages); break;
    case "settings":
      state.settings = { avatar_id: ev.avatar_id, voice_id: ev.voice_id, language: ev.language };
      localStorage.setItem("avatar-settings", JSON.stringify(state.settings));
      showPoster(ev.avatar_id);
      selectValue("avatar-select", ev.avatar_id); selectValue("voice-select", ev.voice_id);
      selectValue("language-select", ev.language);
      break;
    case "speech_start":  // the user talks while reply speech is playing or still to play: it yields
      if (player?.speechAhead) interrupt();
      break;
    case "utterance_end":
      state.thinking = true; break;
    case "cancelled":
      state.thinking = false;
      if (ev.merged) {  // the next transcript repeats these words with the rest
        (window.__merged ??= {})[state.turnId] = performance.now();  // for tests: which turn, when
        state.stoppedTurn = state.turnId;  // the withdrawn reply never plays, nor its fragments in flight
        if (player?.speechAhead) player.stop();
        dropLastTurn();
      }
      else if (ev.reason === "barge_in") interrupt();
      break;
    case "turn":
      state.turnId = ev.turn_id; break;
    case "transcript":
      state.thinking = true; state.avatarLine = null;
      (window.__heardAt ??= []).push(performance.now());  // for tests
      addLine("user", ev.text || "(nothing heard)");
      break;
    case "reply":
      if (state.turnId === state.stoppedTurn) break;  // the user already talked over it
      if (!state.avatarLine) {
        state.avatarLine = addLine("avatar", "");
        state.avatarLine.parentElement.dataset.turn = state.turnId;  // which turn this reply is
      }
      state.avatarLine.textContent += ev.text;
      transcript.scrollTop = transcript.scrollHeight;
      break;
    case "segment":
      expectBytes(ev); break;  // still "thinking" until the playhead reaches the speech
    case "idle":
      expectBytes(ev); break;
    case "done":
      if (!player?.speechAhead) state.thinking = false;
      showTimings(ev.timings); break;
    case "error":
      state.thinking = false; state.idlePending = false;
      if (ev.code === "unknown_avatar" || ev.code === "unknown_voice") {  // e.g. a stored choice that is gone
        localStorage.removeItem("avatar-settings");
        send({ type: "settings", avatar_id: "default", voice_id: "default" });
      }
      showBanner(ev.code === "no_speech" ? "I didn't catch that. Try again?" : ev.message);
      setTimeout(() => showBanner(""), 6000);
      break;
  }
  render();
}

// The still image shown before the first video: with a token, fetched with it (an <img>-style
// request cannot carry the header).
async function showPoster(avatarId) {
  const path = `api/v1/avatars/${encodeURIComponent(avatarId)}/image`;
  if (!token()) { video.poster = new URL(path, BASE); return; }
  const r = await api(path);
  if (!r.ok) return;
  if (video.poster.startsWith("blob:")) URL.revokeObjectURL(video.poster);
  video.poster = URL.createObjectURL(await r.blob());
}

function dropLastTurn() {
  const users = transcript.querySelectorAll("li.user");
  const last = users[users.length - 1];
  while (last?.nextElementSibling) last.nextElementSibling.remove();
  last?.remove();
  state.avatarLine = null;
}

/** The user talks over the avatar: silence it now; the server cancels the rest of the turn. */
function interrupt() {
  if (state.turnId && state.turnId === state.stoppedTurn) return;  // once per turn
  state.stoppedTurn = state.turnId;  // its segments still in flight are dropped on arrival
  const ends = player ? player.speech.map(([, b]) => b) : [];
  const left = Math.max(0, ...ends) - video.currentTime;  // reply seconds that will not be played
  const cut = Boolean(player && player.speaking);  // a piece was playing: it is cut short
  const heard = player ? player.started(state.turnId) : 0;
  (window.__bargeIns ??= []).push({ left, turn: state.turnId, when: performance.now(), cut, heard });  // for tests
  // tell the server how much of the reply was heard, so the history keeps only that
  if (state.turnId && player) send({ type: "interrupted", turn_id: state.turnId, heard, cut });
  player?.stop();
  if (state.avatarLine && !state.avatarLine.parentElement.classList.contains("interrupted")) {
    state.avatarLine.parentElement.classList.add("interrupted");
  }
  state.avatarLine = null;
}

// Keep listening video flowing: ask for more when less than half a second is buffered ahead.
function feed() {
  if (!player || !state.connected || player.ahead > 0.5) return;
  if (state.idlePending && performance.now() - state.idleAsked < 5000) return;  // asked; re-ask if lost
  state.idlePending = true; state.idleAsked = performance.now();
  state.ws.send(JSON.stringify({ type: "idle", seconds: 1.0 }));
}

// ---- microphone -----------------------------------------------------------------------------

async function ensureMic() {
  try {
    await mic.start();
    state.micBlocked = false;
    return true;
  } catch (err) {
    state.micBlocked = true;
    showBanner(err.name === "NotAllowedError"
      ? "Microphone access is blocked. Allow it in the browser's site settings to talk."
      : `No microphone available (${err.name}).`);
    render();
    return false;
  }
}
function send(obj) { if (state.ws?.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(obj)); }

async function toggleHandsFree() {
  unlockAudio();
  if (state.handsFree) {
    state.handsFree = false; send({ type: "mic", on: false });
    if (!state.ptt) mic.stop();
  } else if (await ensureMic()) {
    state.handsFree = true; send({ type: "mic", on: true });
  }
  render();
}
async function pttDown() {
  if (state.ptt || state.handsFree) return;
  unlockAudio();
  if (!(await ensureMic())) return;
  state.ptt = true;
  if (player?.speechAhead) interrupt();
  send({ type: "mic", on: true }); send({ type: "ptt", down: true });
  render();
}
function pttUp() {
  if (!state.ptt) return;
  send({ type: "ptt", down: false });
  state.ptt = false;  // frames stop before the stream is switched off
  send({ type: "mic", on: false });
  mic.stop(); render();
}

micButton.addEventListener("click", (e) => {
  if (e.detail > 0) micButton.blur();  // after a mouse click, Space is push-to-talk again
  toggleHandsFree();
});
// Space on a focused control activates that control (the mic button toggles hands-free).
const typing = (e) => e.target.closest("input, select, textarea, button, label.upload");
document.addEventListener("keydown", (e) => {
  if (e.code !== "Space" || e.repeat || typing(e)) return;
  e.preventDefault(); pttDown();
});
document.addEventListener("keyup", (e) => {
  if (e.code !== "Space" || typing(e)) return;
  e.preventDefault(); pttUp();
});

// Browsers only play sound after a user gesture; until then the avatar moves silently.
function unlockAudio() { state.unlocked = true; applyMuted(); video.play().catch(() => {}); }
function applyMuted() { video.muted = !(state.unlocked && $("autoplay").checked); }
$("autoplay").addEventListener("change", applyMuted);

// ---- settings -------------------------------------------------------------------------------

function selectValue(id, value) { const s = $(id); if ([...s.options].some((o) => o.value === value)) s.value = value; }
function fillLanguages(langs) {
  const names = { en: "English" };
  $("language-select").replaceChildren(...langs.map((l) => new Option(names[l] || l, l)));
}
async function loadList(kind, selectId) {
  const r = await api(`api/v1/${kind}`);
  const items = (await r.json())[kind];
  $(selectId).replaceChildren(...items.map((i) => new Option(i.name, i.id)));
  selectValue(selectId, state.settings[kind === "avatars" ? "avatar_id" : "voice_id"] || "default");
}
for (const [id, key] of [["avatar-select", "avatar_id"], ["voice-select", "voice_id"], ["language-select", "language"]]) {
  $(id).addEventListener("change", (e) => send({ type: "settings", [key]: e.target.value }));
}
async function upload(kind, field, file, selectId, key) {
  const form = new FormData(); form.append(field, file);
  $("note").textContent = `Uploading ${file.name}…`;
  try {
    const r = await api(`api/v1/${kind}`, { method: "POST", body: form });
    const body = await r.json();
    if (!r.ok) { $("note").textContent = ""; showBanner(body.error.message); return; }
    await loadList(kind, selectId);
    send({ type: "settings", [key]: body.id });
    $("note").textContent = body.note ? `Voice clip ${body.note}.` : `Avatar "${body.name}" added.`;
  } catch { showBanner("The upload failed: the server could not be reached."); }
}
$("avatar-file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) upload("avatars", "image", f, "avatar-select", "avatar_id"); e.target.value = ""; });
$("voice-file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) upload("voices", "audio", f, "voice-select", "voice_id"); e.target.value = ""; });
for (const label of document.querySelectorAll("label.upload")) {
  label.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); label.querySelector("input").click(); } });
}

loadList("avatars", "avatar-select").catch(() => {});
loadList("voices", "voice-select").catch(() => {});
connect();
render();

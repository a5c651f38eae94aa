// The duplex browser client: microphone -> /v1/stream -> speaker, full duplex.
//
// Capture and playback run in AudioWorklets (worklets.js). The microphone uses
// the browser's echo cancellation, so the answer coming out of the speaker is
// not heard as the user. On "clear" (a barge-in) the player drops what it
// holds at once. `window.duplex` exposes the live state for tests and tinkering.

const RATES = [8000, 16000, 22050, 24000, 44100, 48000];
const CHUNK_MS = 20;

const $ = (id) => document.getElementById(id);
const view = {
  state: $("state"),
  status: $("status"),
  transcript: $("transcript"),
  turns: document.querySelector("#turns tbody"),
};

const duplex = {
  state: "idle",
  sessionId: null,
  events: [],          // every JSON event from the server, in order
  finals: [],          // the user's turns as the server heard them
  answers: [],         // the assistant's answers: {id, text, heard}
  turns: [],           // turn_metrics events
  cleared: [],         // playback flushes: {played, dropped} samples
  played: 0,           // answer samples played by this page
  audible: 0,          // of those, not silent
  sampleRate: 0,
  error: null,
};
window.duplex = duplex;

let userLine = null;   // the <li> of the user's turn being spoken
let answerLine = null; // the <li> of the answer being written
let stoppedAt = null;  // performance.now() at the server's speech_stopped
let awaitingAudio = false;

function setState(state, status) {
  duplex.state = state;
  document.body.dataset.state = state;
  view.state.textContent = state;
  if (status !== undefined) view.status.textContent = status;
}

function line(kind, text) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  view.transcript.append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}

function socketUrl() {
  const params = new URLSearchParams(location.search);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return { url: `${scheme}//${location.host}/v1/stream`, token: params.get("token") };
}

async function openAudio() {
  let context = new AudioContext({ latencyHint: "interactive" });
  if (!RATES.includes(context.sampleRate)) {
    await context.close();
    context = new AudioContext({ latencyHint: "interactive", sampleRate: 48000 });
  }
  await context.audioWorklet.addModule("worklets.js");
  const microphone = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
  });
  const chunk = Math.round((context.sampleRate * CHUNK_MS) / 1000);
  const capture = new AudioWorkletNode(context, "capture", { processorOptions: { chunk } });
  const player = new AudioWorkletNode(context, "player", { outputChannelCount: [1] });
  context.createMediaStreamSource(microphone).connect(capture);
  capture.connect(context.destination); // outputs silence; keeps the node pulled
  player.connect(context.destination);
  await context.resume();
  return { context, capture, player };
}

function onPlayer(message) {
  const { type, played, audible, dropped } = message.data;
  duplex.played = played;
  duplex.audible = audible ?? duplex.audible;
  if (type === "cleared") duplex.cleared.push({ played, dropped });
  if (type === "started" && awaitingAudio) {
    awaitingAudio = false;
    const row = view.turns.lastElementChild;
    const heard = stoppedAt === null ? null : Math.round(performance.now() - stoppedAt);
    duplex.heardAfterMs = heard;
    if (row && heard !== null) row.dataset.heard = heard;
    setState("speaking");
  }
}

function onEvent(event, player) {
  duplex.events.push(event);
  switch (event.type) {
    case "ready":
      duplex.sessionId = event.session_id;
      setState("listening", "Connected. Talk whenever you like.");
      break;
    case "speech_started":
      if (duplex.state !== "speaking") setState("hearing");
      break;
    case "speech_stopped":
      stoppedAt = performance.now();
      if (duplex.state === "hearing") setState("thinking");
      break;
    case "transcript_delta":
      userLine ??= line("user partial", "");
      userLine.textContent = tidy(userLine.textContent + " " + event.text);
      break;
    case "transcript_final":
      userLine ??= line("user", "");
      userLine.className = "user";
      userLine.textContent = event.text;
      duplex.finals.push(event.text);
      userLine = null;
      break;
    case "turn_taken":
      awaitingAudio = true;
      answerLine = line("assistant", "");
      duplex.answers.push({ id: event.response_id, text: "", heard: null });
      setState("thinking");
      break;
    case "response_text":
      if (duplex.answers.length) {
        const answer = duplex.answers.at(-1);
        answer.text = tidy(answer.text + event.text);
        if (answerLine) answerLine.textContent = answer.text;
      }
      break;
    case "clear":
      player.port.postMessage("clear");
      break;
    case "interrupted":
      markInterrupted(event);
      setState("hearing");
      break;
    case "backchannel_ignored":
      line("note", `(heard "${event.text}" and went on)`);
      break;
    case "response_done":
      answerLine = null;
      if (duplex.state === "speaking" || duplex.state === "thinking") setState("listening");
      break;
    case "turn_metrics":
      addTurn(event);
      break;
    case "error":
      line("note", `error ${event.error.code}: ${event.error.message}`);
      break;
  }
}

function markInterrupted(event) {
  if (!answerLine) return;
  const heard = tidy(event.played_text || "");
  const all = answerLine.textContent;
  const rest = all.startsWith(heard) ? all.slice(heard.length) : "";
  answerLine.textContent = heard;
  if (rest.trim()) {
    const span = document.createElement("span");
    span.className = "unheard";
    span.textContent = rest;
    answerLine.append(span);
  }
  if (duplex.answers.length) duplex.answers.at(-1).heard = heard;
  answerLine = null;
}

function tidy(text) {
  return text.replace(/\s+/g, " ").trimStart();
}

function ms(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value)} ms`;
}

function addTurn(event) {
  duplex.turns.push(event);
  const row = document.createElement("tr");
  const heard = duplex.heardAfterMs ?? null;
  duplex.heardAfterMs = null;
  for (const cell of [
    duplex.turns.length,
    ms(event.end_of_turn_ms),
    ms(heard),
    ms(event.barge_in_stop_ms),
    event.outcome,
  ]) {
    const td = document.createElement("td");
    td.textContent = cell;
    row.append(td);
  }
  view.turns.append(row);
}

async function start() {
  $("start").disabled = true;
  setState("connecting", "Opening the microphone…");
  let audio;
  try {
    audio = await openAudio();
  } catch (error) {
    duplex.error = String(error);
    setState("error", `No microphone: ${error.message || error}`);
    $("start").disabled = false;
    return;
  }
  const { context, capture, player } = audio;
  duplex.sampleRate = context.sampleRate;
  player.port.onmessage = onPlayer;

  const { url, token } = socketUrl();
  const protocols = token ? ["duplex", `openai-insecure-api-key.${token}`] : ["duplex"];
  const ws = new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  let ready = false;
  ws.onopen = () => {
    ws.send(JSON.stringify({
      type: "hello",
      sample_rate: context.sampleRate,
      output_sample_rate: context.sampleRate,
    }));
  };
  ws.onmessage = (message) => {
    if (message.data instanceof ArrayBuffer) {
      player.port.postMessage(message.data, [message.data]);
      return;
    }
    const event = JSON.parse(message.data);
    if (event.type === "ready") ready = true;
    onEvent(event, player);
  };
  ws.onclose = (close) => {
    player.port.postMessage("clear");
    capture.port.onmessage = null;
    context.close();
    const why = close.reason || `code ${close.code}`;
    setState("idle", `Disconnected (${why}). Press start to talk again.`);
    $("start").disabled = false;
  };
  capture.port.onmessage = (message) => {
    if (ready && ws.readyState === WebSocket.OPEN) ws.send(message.data);
  };
}

$("start").addEventListener("click", start);

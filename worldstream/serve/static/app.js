// worldstream page: draws the live stream, plays its sound, sends keys, prompts and images.
// Protocol: worldstream/serve/protocol.py (docs/protocol.md). No external assets.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const canvas = $("screen"), ctx2d = canvas.getContext("2d"), overlay = $("overlay"), message = $("message");
  const params = new URLSearchParams(location.search);
  const state = { hello: null, framesDrawn: 0, lastIndex: -1, latencies: [], drawTimes: [], status: {},
                  seq: 0, sent: new Map(), paused: false, recording: false, muted: true, errors: [] };
  window.worldstream = state;  // for tests and the curious
  const EXAMPLES = ["it starts to snow", "night falls", "a thunderstorm rolls in", "fog rolls in", "a clear sunny morning"];

  const wsUrl = () => {
    const q = new URLSearchParams({ seed: String(Math.floor(Math.random() * 1e9)) });
    if (params.get("token")) q.set("token", params.get("token"));
    if (params.get("prompt")) q.set("prompt", params.get("prompt"));
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?${q}`;
  };
  const ws = new WebSocket(wsUrl());
  ws.binaryType = "arraybuffer";
  const send = (obj) => { if (ws.readyState === 1) ws.send(JSON.stringify(obj)); };
  const sendEvent = (obj) => { obj.seq = ++state.seq; state.sent.set(obj.seq, performance.now()); send(obj); };

  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") return onJson(JSON.parse(ev.data));
    const view = new DataView(ev.data), kind = view.getUint8(0);
    if (kind === 1) onFrame(view.getUint32(1, true), view.getUint32(13, true), new Blob([new Uint8Array(ev.data, 17)], { type: "image/jpeg" }));
    else if (kind === 2) onAudio(view.getUint32(5, true), new Int16Array(ev.data.slice(9)));
  };
  ws.onclose = () => { overlay.textContent = (state.refused ? "refused: " + state.refused : "disconnected") + "\nreload to reconnect"; };

  function onJson(m) {
    if (m.type === "hello") {
      state.hello = m;
      canvas.width = m.width; canvas.height = m.height;
      fit();
    } else if (m.type === "status") state.status = m;
    else if (m.type === "error") { state.errors.push(m.message); message.textContent = m.message; }
    else if (m.type === "refused") { state.refused = m.message; message.textContent = m.message; }
  }

  function onFrame(index, seq, blob) {
    createImageBitmap(blob).then((bmp) => {
      if (index <= state.lastIndex) return;  // a late decode of an older frame
      ctx2d.drawImage(bmp, 0, 0, canvas.width, canvas.height);
      state.lastIndex = index; state.framesDrawn++;
      const now = performance.now();
      state.drawTimes.push(now); if (state.drawTimes.length > 48) state.drawTimes.shift();
      for (const [s, t] of state.sent) if (s <= seq) { state.latencies.push(now - t); state.sent.delete(s); }
      if (state.latencies.length > 200) state.latencies.splice(0, state.latencies.length - 200);
    });
  }

  // -- sound: WebAudio, each chunk scheduled right after the previous one --
  let audioCtx = null, nextTime = 0;
  function onAudio(rate, pcm) {
    if (state.muted || !audioCtx) return;
    const buf = audioCtx.createBuffer(1, pcm.length, rate), ch = buf.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
    const src = audioCtx.createBufferSource(); src.buffer = buf; src.connect(audioCtx.destination);
    const now = audioCtx.currentTime;
    if (nextTime < now + 0.02 || nextTime > now + 0.4) nextTime = now + 0.06;  // (re)start with a small jitter buffer
    src.start(nextTime); nextTime += buf.duration;
  }
  $("mute").onclick = () => {
    state.muted = !state.muted;
    if (!state.muted && !audioCtx) audioCtx = new AudioContext();
    $("mute").textContent = state.muted ? "sound: off" : "sound: on";
  };

  // -- keys --
  const pressed = new Set(), KEYS = ["w", "a", "s", "d", "arrowup", "arrowdown", "arrowleft", "arrowright", "shift"];
  const keyChange = (e, down) => {
    if (document.activeElement === $("prompt")) return;
    const k = e.key.toLowerCase();
    if (!KEYS.includes(k)) return;
    e.preventDefault();
    const before = pressed.size + [...pressed].join();
    down ? pressed.add(k) : pressed.delete(k);
    if (before !== pressed.size + [...pressed].join()) sendEvent({ type: "keys", keys: [...pressed] });
  };
  window.addEventListener("keydown", (e) => keyChange(e, true));
  window.addEventListener("keyup", (e) => keyChange(e, false));
  window.addEventListener("blur", () => { if (pressed.size) { pressed.clear(); sendEvent({ type: "keys", keys: [] }); } });
  canvas.addEventListener("click", () => canvas.focus());

  // -- prompt --
  $("prompt-form").onsubmit = (e) => {
    e.preventDefault();
    const text = $("prompt").value.trim();
    if (text) sendEvent({ type: "prompt", text });
    $("prompt").blur(); canvas.focus();
  };
  for (const p of EXAMPLES) {
    const b = document.createElement("button"); b.type = "button"; b.textContent = p;
    b.onclick = () => { $("prompt").value = p; sendEvent({ type: "prompt", text: p }); canvas.focus(); };
    $("examples").appendChild(b);
  }

  // -- images: pick or drop --
  const sendImage = async (file) => {
    if (!file) return;
    const bytes = new Uint8Array(await file.arrayBuffer()), msg = new Uint8Array(bytes.length + 1);
    msg[0] = $("image-mode").value === "blend" ? 0x11 : 0x10; msg.set(bytes, 1);
    if (ws.readyState === 1) ws.send(msg);
  };
  $("image").onchange = (e) => sendImage(e.target.files[0]);
  const stage = $("stage");
  stage.addEventListener("dragover", (e) => { e.preventDefault(); stage.classList.add("dragging"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", (e) => { e.preventDefault(); stage.classList.remove("dragging"); sendImage(e.dataTransfer.files[0]); });

  // -- controls --
  $("pause").onclick = () => { state.paused = !state.paused; send({ type: state.paused ? "pause" : "resume" });
                               $("pause").textContent = state.paused ? "resume" : "pause"; };
  $("reset").onclick = () => { send({ type: "reset", seed: Math.floor(Math.random() * 1e9) }); canvas.focus(); };
  $("record").onclick = async () => {
    state.recording = !state.recording;
    $("record").classList.toggle("on", state.recording);
    $("record").textContent = state.recording ? "stop & download" : "record";
    send({ type: "record", on: state.recording });
    if (!state.recording && state.hello) {
      const q = params.get("token") ? `?token=${encodeURIComponent(params.get("token"))}` : "";
      const r = await fetch(`/record/${state.hello.session}.mp4${q}`);
      if (!r.ok) { message.textContent = (await r.json()).error; return; }
      const a = document.createElement("a");
      a.href = URL.createObjectURL(await r.blob()); a.download = `worldstream-${state.hello.session}.mp4`; a.click();
    }
  };

  // -- layout and overlay --
  function fit() {  // native aspect ratio, scaled by a whole factor when it fits (crisp pixels)
    const box = stage.getBoundingClientRect(), w = canvas.width, h = canvas.height;
    const k = Math.max(1, Math.floor(Math.min(box.width / w, box.height / h)));
    canvas.style.width = `${w * k}px`; canvas.style.height = `${h * k}px`;
  }
  window.addEventListener("resize", fit);
  const pct = (xs, q) => { if (!xs.length) return NaN; const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };
  setInterval(() => {
    const h = state.hello; if (!h) return;
    const t = state.drawTimes, fps = t.length > 1 ? (t.length - 1) * 1000 / (t[t.length - 1] - t[0]) : 0;
    const st = state.status;
    overlay.textContent = `${fps.toFixed(1)} fps   key→frame p50 ${pct(state.latencies, .5).toFixed(0)} ms  p95 ${pct(state.latencies, .95).toFixed(0)} ms\n` +
      `${h.sampler} × ${h.steps} steps   ${h.model} on ${h.device}   ${h.width}×${h.height}\n` +
      `server ${st.ms_per_chunk_p50 ? st.ms_per_chunk_p50.toFixed(0) : "–"} ms/chunk   dropped ${st.dropped || 0}` +
      (state.paused ? "   PAUSED" : "");
  }, 250);
  canvas.focus();
})();

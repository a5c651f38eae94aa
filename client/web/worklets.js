// Audio worklets of the duplex browser client; they run on the audio thread.
//
// "capture": microphone samples -> PCM16 chunks of `chunk` samples, posted to
// the page, which sends them to the server as they are captured.
// "player": PCM16 chunks from the server -> the speaker, from a queue that a
// "clear" message empties at once (barge-in). It reports what it played.

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = options.processorOptions.chunk;
    this.buffer = new Int16Array(this.chunk);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        const s = Math.max(-1, Math.min(1, channel[i]));
        this.buffer[this.filled++] = s < 0 ? s * 0x8000 : s * 0x7fff;
        if (this.filled === this.chunk) {
          this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
          this.buffer = new Int16Array(this.chunk);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

class Player extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];      // Float32Arrays waiting to be played
    this.offset = 0;      // position in queue[0]
    this.played = 0;      // samples of answer audio played, all told
    this.audible = 0;     // of those, samples louder than -40 dBFS
    this.playing = false;
    this.sinceReport = 0;
    this.port.onmessage = (e) => {
      if (e.data === "clear") {
        const dropped = this.queue.reduce((n, q) => n + q.length, 0) - this.offset;
        this.queue = [];
        this.offset = 0;
        this.stopped();
        this.port.postMessage({ type: "cleared", played: this.played, dropped });
        return;
      }
      const pcm = new Int16Array(e.data);
      const samples = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 0x8000;
      this.queue.push(samples);
    };
  }

  stopped() {
    if (this.playing) {
      this.playing = false;
      this.port.postMessage({ type: "stopped", played: this.played, audible: this.audible });
    }
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    while (i < out.length && this.queue.length) {
      if (!this.playing) {
        this.playing = true;
        this.port.postMessage({ type: "started", played: this.played });
      }
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.length - this.offset);
      for (let k = 0; k < n; k++) {
        const s = head[this.offset + k];
        out[i + k] = s;
        if (s > 0.01 || s < -0.01) this.audible++;
      }
      i += n;
      this.offset += n;
      this.played += n;
      if (this.offset === head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    out.fill(0, i);
    if (i < out.length) this.stopped();  // the queue ran dry
    this.sinceReport += out.length;
    if (this.sinceReport >= sampleRate / 10) {
      this.sinceReport = 0;
      this.port.postMessage({ type: "stats", played: this.played, audible: this.audible });
    }
    return true;
  }
}

registerProcessor("capture", Capture);
registerProcessor("player", Player);

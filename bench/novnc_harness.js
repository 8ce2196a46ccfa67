// The page of bench/real_viewer.py (figure 2.1 and 2.6's noVNC join), inlined
// into its HTML, which points this import at the bench's own server.
import RFB from "/novnc/core/rfb.js";

const CONNECT_TIMEOUT_MS = 20000;
const PRESS_TIMEOUT_MS = 5000;
const bench = (window.bench = {
  rfb: null, armed: null, rects: {},
  // Frames drawn (figure 2.2); the bytes are counted by the init script.
  flips: 0,
  traffic() {
    return { bytes: window.benchBytes || 0, flips: bench.flips, at: performance.now() };
  },
  // Completed rectangles by encoding (noVNC's numbers), Tight's by subencoding.
  count(decoder, method, name) {
    const decode = decoder[method].bind(decoder);
    decoder[method] = (...args) => {
      const done = decode(...args);
      if (done) bench.rects[name] = (bench.rects[name] || 0) + 1;
      return done;
    };
  },
  // noVNC on `url`; answers performance.now() at the start and at the first
  // flip after the handshake that draws the whole screen (the answer to
  // noVNC's first, full update request).
  connect(url, password, quality, compression) {
    if (bench.rfb) bench.rfb.disconnect();
    const started = performance.now();
    const rfb = new RFB(document.getElementById("screen"), url, {
      shared: true, credentials: { password }, wsProtocols: ["binary"],
    });
    rfb.qualityLevel = quality;
    rfb.compressionLevel = compression;
    bench.rfb = rfb;
    for (const [encoding, decoder] of Object.entries(rfb._decoders)) {
      bench.count(decoder, "decodeRect", encoding);
    }
    const tight = rfb._decoders[7];
    for (const kind of ["fill", "jpeg", "basic"]) {
      bench.count(tight, "_" + kind + "Rect", "7." + kind);
    }
    const display = rfb._display;
    const flip = display.flip.bind(display);
    let connected = false;
    let firstFrame;
    const framed = new Promise((resolve) => (firstFrame = resolve));
    display.flip = (fromQueue) => {
      // A flip with a render queue pending only queues itself: not drawn yet.
      const drawn = fromQueue || display._renderQ.length === 0;
      const damage = display._damageBounds;
      const whole = damage.left === 0 && damage.top === 0 &&
        damage.right >= display.width && damage.bottom >= display.height;
      flip(fromQueue);
      if (!drawn) return;
      bench.flips += 1;
      // The first flip drawing the whole screen (not one of pseudo-encodings only).
      if (connected && whole) firstFrame(performance.now());
      const armed = bench.armed;
      if (!armed || armed.down === null) return;
      if (bench.pixel(armed.x, armed.y) !== armed.before) {
        bench.armed = null;
        armed.resolve(performance.now() - armed.down);
      }
    };
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no first frame")), CONNECT_TIMEOUT_MS);
      rfb.addEventListener("disconnect", (e) => reject(new Error("disconnected: " + e.detail.clean)));
      rfb.addEventListener("securityfailure", (e) => reject(new Error("refused: " + e.detail.reason)));
      rfb.addEventListener("connect", () => (connected = true));
      framed.then((at) => {
        clearTimeout(timer);
        rfb.focus();
        resolve({ width: display.width, height: display.height, started, at });
      });
    });
  },
  // A viewer joining through the edge as the live view does: GET stream with
  // the bearer token, then noVNC on the URL it answers. Milliseconds to the first frame.
  async join(streamPath, token, quality, compression) {
    const began = performance.now();
    const response = await fetch(streamPath, { headers: { Authorization: "Bearer " + token } });
    if (!response.ok) throw new Error("GET stream answered " + response.status);
    const { url } = await response.json();
    const frame = await bench.connect(url, "", quality, compression);
    return frame.at - began;
  },
  pixel(x, y) {
    return Array.from(bench.rfb._display._targetCtx.getImageData(x, y, 1, 1).data.slice(0, 3)).join(",");
  },
  arm(x, y) {
    let resolve;
    const done = new Promise((r) => (resolve = r));
    bench.armed = { x, y, before: bench.pixel(x, y), down: null, resolve };
    bench.result = Promise.race([
      done,
      new Promise((_, reject) => setTimeout(() => reject(new Error("no change")), PRESS_TIMEOUT_MS)),
    ]);
  },
});
// Capture phase on window: before noVNC's own keydown handler sends the key.
window.addEventListener("keydown", () => {
  if (bench.armed && bench.armed.down === null) bench.armed.down = performance.now();
}, true);

"""``GET /``: one self-contained page to try the API (inline HTML/CSS/JS, no build step).

It asks ``/v1/model`` for the intensity levels, posts the form to ``/v1/animate`` with
``format=gif`` (every browser plays GIF in an ``<img>``; headless Chromium may lack H.264) and
shows the result with a download link. An API key typed into the page is sent as
``Authorization: Bearer``; it is kept in the page only.
"""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LivePhoto</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.5rem; }
  label { display: block; margin: .8rem 0 .2rem; font-weight: 600; }
  input[type=text], input[type=password] { width: 100%; padding: .4rem; box-sizing: border-box; }
  input[type=range] { width: 70%; vertical-align: middle; }
  button { margin-top: 1rem; padding: .5rem 1.5rem; font-size: 1rem; }
  .row { display: flex; gap: 1.5rem; flex-wrap: wrap; margin-top: 1rem; }
  .row img { max-width: 20rem; width: 100%; image-rendering: auto; border: 1px solid #ccc; }
  #status { margin-top: 1rem; min-height: 1.2rem; }
  .error { color: #b00020; }
  details { margin-top: .8rem; }
</style>
</head>
<body>
<h1>LivePhoto</h1>
<p>Choose a photo, describe the motion, pick how much it moves, and press <em>Animate</em>.
The photo is centre-cropped to a square and resized to the model's resolution.</p>
<form id="form">
  <label for="image">Photo (JPEG, PNG or WebP)</label>
  <input id="image" name="image" type="file" accept="image/jpeg,image/png,image/webp" required>
  <label for="prompt">Motion prompt</label>
  <input id="prompt" name="prompt" type="text" placeholder="the flag waves in the wind" required>
  <label for="intensity">Motion intensity: <output id="intensity-value">5</output></label>
  <input id="intensity" name="intensity" type="range" min="1" max="10" step="1" value="5">
  <details>
    <summary>More settings</summary>
    <label for="num_frames">Frames</label><input id="num_frames" name="num_frames" type="text" placeholder="model default">
    <label for="num_inference_steps">Denoising steps</label><input id="num_inference_steps" name="num_inference_steps" type="text" placeholder="server default">
    <label for="seed">Seed</label><input id="seed" name="seed" type="text" placeholder="random">
    <label for="api_key">API key (if the server needs one)</label><input id="api_key" type="password" autocomplete="off">
  </details>
  <button id="animate" type="submit">Animate</button>
</form>
<div id="status" role="status"></div>
<div class="row">
  <figure><img id="preview" alt="your photo" hidden><figcaption>photo</figcaption></figure>
  <figure><img id="result" alt="the animated result" hidden><figcaption><a id="download" hidden download="livephoto.gif">Download</a></figcaption></figure>
</div>
<script>
const $ = (id) => document.getElementById(id);
const slider = $("intensity");
slider.addEventListener("input", () => { $("intensity-value").textContent = slider.value; });
function headers() {
  const key = $("api_key").value.trim();
  return key ? { "Authorization": "Bearer " + key } : {};
}
fetch("v1/model", { headers: headers() }).then((r) => r.ok ? r.json() : null).then((m) => {
  if (m && m.intensity_levels) { slider.max = m.intensity_levels; }
}).catch(() => {});
$("image").addEventListener("change", () => {
  const f = $("image").files[0];
  if (f) { $("preview").src = URL.createObjectURL(f); $("preview").hidden = false; }
});
$("form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const status = $("status");
  const data = new FormData();
  const file = $("image").files[0];
  if (!file) { status.textContent = "Choose a photo first."; status.className = "error"; return; }
  data.append("image", file);
  data.append("prompt", $("prompt").value);
  data.append("intensity", slider.value);
  data.append("format", "gif");
  for (const name of ["num_frames", "num_inference_steps", "seed"]) {
    const v = $(name).value.trim();
    if (v) data.append(name, v);
  }
  status.className = ""; status.textContent = "Animating...";
  $("animate").disabled = true;
  try {
    const r = await fetch("v1/animate", { method: "POST", body: data, headers: headers() });
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail; } catch (e) {}
      throw new Error(r.status + ": " + detail);
    }
    const blob = await r.blob();
    const url = URL.createObjectURL(blob);
    const seed = r.headers.get("X-Seed");
    $("result").src = url; $("result").hidden = false;
    const link = $("download");
    link.href = url; link.download = "livephoto-" + seed + ".gif"; link.hidden = false;
    status.textContent = "Done: seed " + seed + ", " + r.headers.get("X-Inference-Seconds") + " s of inference.";
  } catch (e) {
    status.className = "error"; status.textContent = "Error " + e.message;
  } finally {
    $("animate").disabled = false;
  }
});
</script>
</body>
</html>
"""

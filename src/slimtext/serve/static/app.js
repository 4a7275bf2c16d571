// Progressive enhancement for the slimtext page. Without this script the forms POST and the
// server renders the result; with it, the result markup is filled in place from the JSON API
// (POST /api/explain, or /api/classify for texts too long to explain), the threshold slider moves
// the verdict without a server call, and "Wrong?" posts to /api/feedback. Every text is written
// with textContent, never as HTML.
(() => {
  const form = document.getElementById("classify-form");
  if (!form || !window.fetch) return;
  const app = document.getElementById("app");
  const labels = JSON.parse(app.dataset.labels);
  const binary = app.dataset.binary === "true";
  const positive = app.dataset.positive;
  const band = parseFloat(app.dataset.band);
  const explainMax = parseInt(app.dataset.explainMaxChars, 10);
  const $ = (id) => document.getElementById(id);
  const box = $("text");
  const button = $("classify-button");
  const result = $("result");
  const errorBox = $("error");
  const slider = $("threshold");
  const pct = (p) => (100 * p).toFixed(1) + "%";
  let last = null; // the last API answer: {text, probabilities, words?, method?}

  for (const link of document.querySelectorAll("a.example")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      box.value = link.dataset.text;
      box.focus();
    });
  }
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });

  const threshold = () => (slider ? parseFloat(slider.value) : 0.5);

  // The same rule as slimtext.inference.review.ReviewPolicy.decide
  function decide(probs) {
    if (binary) {
      const p = probs[positive], t = threshold();
      const label = p >= t ? positive : labels.find((l) => l !== positive);
      return { label, probability: probs[label], review: Math.abs(p - t) <= band + 1e-12 };
    }
    const sorted = labels.map((l) => probs[l]).sort((a, b) => b - a);
    const label = labels.reduce((a, b) => (probs[b] > probs[a] ? b : a));
    return { label, probability: probs[label], review: sorted[0] - sorted[1] <= 2 * band + 1e-12 };
  }

  function drawGauge() {
    if (!binary || !$("gauge")) return;
    const t = threshold(), lo = Math.max(0, t - band), hi = Math.min(1, t + band);
    $("gauge-mark").style.left = pct(t);
    $("gauge-band").style.left = pct(lo);
    $("gauge-band").style.width = pct(hi - lo);
    $("gauge-t").textContent = t.toFixed(2);
    $("threshold-value").textContent = t.toFixed(2);
    if ($("score-threshold")) $("score-threshold").value = t.toFixed(2);
    for (const field of document.querySelectorAll('#feedback-form input[name="threshold"]')) {
      field.value = t.toFixed(2);
    }
  }

  function drawVerdict() {
    if (!last) return;
    const v = decide(last.probabilities);
    const label = $("result-label");
    label.textContent = v.label;
    label.dataset.label = v.label;
    $("result-prob").textContent = pct(v.probability);
    $("review-flag").hidden = !v.review;
    if (binary) {
      const p = last.probabilities[positive];
      $("gauge-fill").style.width = pct(p);
      $("gauge").setAttribute("aria-valuenow", (100 * p).toFixed(1));
      $("gauge-p").textContent = p.toFixed(2);
    }
    if ($("feedback-form")) {
      $("feedback-text").value = last.text;
      $("feedback-model").value = v.label;
      if (binary) {
        const other = labels.find((l) => l !== v.label);
        $("feedback-corrected").value = other;
        $("feedback-other").textContent = other;
      }
    }
    document.title = `${v.label} · ${document.title.split(" · ").slice(-2).join(" · ")}`;
    return v;
  }

  function drawWords(text, words, focus) {
    const out = $("highlighted");
    out.replaceChildren();
    const scale = Math.max(0.05, ...words.map((w) => Math.abs(w.scores[focus])));
    let pos = 0;
    for (const w of words) {
      if (w.start > pos) out.append(document.createTextNode(text.slice(pos, w.start)));
      const s = w.scores[focus];
      const span = document.createElement("span");
      span.className = "w " + (s > 0 ? "up" : s < 0 ? "down" : "none");
      span.tabIndex = 0;
      span.style.setProperty("--s", Math.min(1, Math.abs(s) / scale).toFixed(3));
      span.dataset.score = s.toFixed(4);
      const said = `${s >= 0 ? "+" : ""}${s.toFixed(3)} towards ${focus}`;
      span.title = said;
      span.setAttribute("aria-label", `${w.word}: ${said}`);
      span.textContent = w.word;
      out.append(span);
      pos = w.end;
    }
    if (pos < text.length) out.append(document.createTextNode(text.slice(pos)));
    for (const el of document.querySelectorAll(".focus-label")) el.textContent = focus;
  }

  function show(body, roundTripMs) {
    last = body;
    const v = drawVerdict();
    for (const row of result.querySelectorAll(".bars li")) {
      const p = body.probabilities[row.dataset.label] ?? 0;
      row.querySelector(".fill").style.width = pct(p);
      row.querySelector(".bar").setAttribute("aria-valuenow", (100 * p).toFixed(1));
      row.querySelector(".pct").textContent = pct(p);
    }
    const explained = Array.isArray(body.words);
    $("explanation").hidden = !explained;
    if (explained) {
      drawWords(body.text, body.words, binary ? positive : v.label);
      $("word-detail").textContent = `method: ${body.method}`;
    }
    $("result-latency").textContent = body.latency_ms.toFixed(1);
    $("result-roundtrip").textContent = ` · round trip ${roundTripMs.toFixed(0)} ms`;
    errorBox.hidden = true;
    $("notice").hidden = true;
    result.hidden = false;
  }

  function fail(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  if (!result.hidden) { // a result the server rendered (form post): the slider can move it too
    last = { text: box.value, probabilities: JSON.parse(result.dataset.probabilities) };
  }

  if (slider) {
    slider.addEventListener("input", () => {
      drawGauge();
      drawVerdict();
    });
    drawGauge();
  }

  $("highlighted").addEventListener("focusin", (event) => {
    if (event.target.classList.contains("w")) $("word-detail").textContent = event.target.getAttribute("aria-label");
  });

  async function postJSON(url, payload) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload),
    });
    return [response, await response.json()];
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    const started = performance.now();
    const text = box.value;
    const url = text.length <= explainMax ? app.dataset.explainApi : form.dataset.api;
    let response, body;
    try {
      [response, body] = await postJSON(url, { text });
      if (response.status === 413 && url !== form.dataset.api) {
        [response, body] = await postJSON(form.dataset.api, { text }); // too long to explain
      }
    } catch (err) {
      form.submit(); // network trouble or a non-JSON reply: let the server render the page
      return;
    } finally {
      button.disabled = false;
    }
    if (!response.ok) {
      fail(body.error || `HTTP ${response.status}`);
      result.hidden = true;
      return;
    }
    show({ ...body, text }, performance.now() - started);
  });

  const feedback = $("feedback-form");
  if (feedback) {
    feedback.addEventListener("submit", async (event) => {
      event.preventDefault();
      const payload = {
        text: $("feedback-text").value,
        model_label: $("feedback-model").value,
        corrected_label: $("feedback-corrected").value,
      };
      let response, body;
      try {
        [response, body] = await postJSON(feedback.dataset.api, payload);
      } catch (err) {
        feedback.submit();
        return;
      }
      if (!response.ok) return fail(body.error || `HTTP ${response.status}`);
      $("notice").textContent = `Thanks: saved as “${payload.corrected_label}” for review.`;
      $("notice").hidden = false;
    });
  }
})();

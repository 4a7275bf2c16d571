// Progressive enhancement for the slimtext page. Without this script the form POSTs to "/"
// and the server renders the result; with it, the same result markup is filled in place from
// POST /api/classify. Example links fill the text box instead of navigating.
(() => {
  const form = document.getElementById("classify-form");
  if (!form || !window.fetch) return;
  const box = document.getElementById("text");
  const button = document.getElementById("classify-button");
  const result = document.getElementById("result");
  const errorBox = document.getElementById("error");
  const pct = (p) => (100 * p).toFixed(1) + "%";

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

  function show(body, roundTripMs) {
    const label = document.getElementById("result-label");
    label.textContent = body.label;
    label.dataset.label = body.label;
    document.getElementById("result-prob").textContent = pct(body.probabilities[body.label]);
    for (const row of result.querySelectorAll(".bars li")) {
      const p = body.probabilities[row.dataset.label] ?? 0;
      row.querySelector(".fill").style.width = pct(p);
      row.querySelector(".bar").setAttribute("aria-valuenow", (100 * p).toFixed(1));
      row.querySelector(".pct").textContent = pct(p);
    }
    document.getElementById("result-latency").textContent = body.latency_ms.toFixed(1);
    document.getElementById("result-roundtrip").textContent =
      ` · round trip ${roundTripMs.toFixed(0)} ms`;
    errorBox.hidden = true;
    result.hidden = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    const started = performance.now();
    let response, body;
    try {
      response = await fetch(form.dataset.api, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ text: box.value }),
      });
      body = await response.json();
    } catch (err) {
      form.submit(); // network trouble or a non-JSON reply: let the server render the page
      return;
    } finally {
      button.disabled = false;
    }
    if (!response.ok) {
      errorBox.textContent = body.error || `HTTP ${response.status}`;
      errorBox.hidden = false;
      result.hidden = true;
      return;
    }
    show(body, performance.now() - started);
  });
})();

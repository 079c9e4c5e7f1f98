// parasal dashboard: the little interactivity the pages need. No framework, no network
// beyond this dashboard's own endpoints.
"use strict";

// Fragments loaded after the page (surprise/expectation): the page itself stays fast.
function loadFragments() {
  const pending = [];
  document.querySelectorAll("[data-fragment]").forEach((el) => {
    pending.push(
      fetch(el.dataset.fragment)
        .then((r) => r.text().then((html) => {
          if (!r.ok) {
            // An error page: show its title and message inside the section.
            const doc = new DOMParser().parseFromString(html, "text/html");
            const box = doc.querySelector(".error-page");
            el.innerHTML = '<p class="wrong"></p>';
            el.firstChild.textContent = box ? box.querySelector("h1").textContent + ": " +
              box.querySelector(".message").textContent : "HTTP " + r.status;
          } else {
            el.innerHTML = html;
          }
        }))
        .catch((e) => { el.innerHTML = '<p class="wrong"></p>'; el.firstChild.textContent = String(e); })
    );
  });
  return Promise.all(pending);
}

// The failure map: recolour by failure mode or by confusion pair, with a legend.
function setupMap() {
  const map = document.getElementById("failure-map");
  const select = document.getElementById("map-colour");
  if (!map || !select) return;
  const pairColours = JSON.parse(document.getElementById("pair-colours").textContent);
  const pairNames = JSON.parse(document.getElementById("pair-names").textContent);
  const circles = Array.from(map.querySelectorAll("circle"));
  const modeColours = new Map(circles.map((c) => [c.dataset.mode, c.getAttribute("fill")]));
  const legend = document.getElementById("map-legend");
  function draw() {
    const byPair = select.value === "pair";
    circles.forEach((c) => c.setAttribute("fill", byPair ? pairColours[c.dataset.pair] : modeColours.get(c.dataset.mode)));
    const entries = byPair
      ? Object.keys(pairColours).map((k) => [pairColours[k], pairNames[k]])
      : Array.from(modeColours.entries()).sort((a, b) => a[0] - b[0])
          .map(([m, col]) => [col, m < 0 ? "no mode" : "mode " + m]);
    legend.innerHTML = "";
    entries.slice(0, 40).forEach(([col, label]) => {
      const item = document.createElement("span");
      item.innerHTML = '<span class="swatch"></span>';
      item.firstChild.style.background = col;
      item.appendChild(document.createTextNode(label));
      legend.appendChild(item);
    });
  }
  select.addEventListener("change", draw);
  draw();
}

// Upload: drop an image on the zone (or click it), preview it.
function setupDrop() {
  const zone = document.getElementById("drop");
  const input = document.getElementById("upload-input");
  if (!zone || !input) return;
  const preview = document.getElementById("drop-preview");
  const text = document.getElementById("drop-text");
  function show() {
    const file = input.files && input.files[0];
    if (!file) return;
    text.textContent = file.name;
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
  }
  input.addEventListener("change", show);
  ["dragenter", "dragover"].forEach((t) => zone.addEventListener(t, (e) => { e.preventDefault(); zone.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => zone.addEventListener(t, () => zone.classList.remove("over")));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files; show(); }
  });
}

// An operation's page: follow WatchOperation through Server-Sent Events; reload when done
// so the server renders the result tables and plots.
function setupOperation() {
  const box = document.getElementById("operation");
  if (!box || box.dataset.done === "true") return;
  const source = new EventSource("/operations/" + encodeURIComponent(box.dataset.id) + "/events");
  const bar = document.getElementById("op-bar");
  const state = document.getElementById("op-state");
  const message = document.getElementById("op-message");
  source.addEventListener("progress", (e) => {
    const op = JSON.parse(e.data);
    bar.style.width = (100 * op.progress).toFixed(1) + "%";
    state.textContent = op.state;
    message.textContent = op.message;
    box.dataset.state = op.state;
  });
  source.addEventListener("done", () => { source.close(); window.location.reload(); });
  source.addEventListener("failure", (e) => {
    const err = JSON.parse(e.data);
    message.textContent = "lost the operation's progress: " + err.code + " " + err.message;
    source.close();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupMap();
  setupDrop();
  setupOperation();
  loadFragments().then(() => { document.body.dataset.ready = "true"; });
});

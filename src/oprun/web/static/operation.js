// The operation page: its changing parts follow the event stream, its log is followed
// with long polls, and cancel/retry go to the API with the session cookie.
"use strict";

(function () {
  const root = document.getElementById("op");
  if (!root) return;
  const id = root.dataset.id;
  const base = "/v1/operations/" + encodeURIComponent(id);
  const message = document.getElementById("op-message");

  function say(text, bad) {
    message.textContent = text;
    message.classList.toggle("bad", Boolean(bad));
  }

  function terminal() {
    const slot = document.querySelector('[data-slot="status"]');
    return slot !== null && slot.dataset.terminal === "yes";
  }

  function showLatestStatus() {
    const scroller = document.querySelector(".timeline-scroll");
    if (scroller && scroller.scrollWidth > scroller.clientWidth) {
      scroller.scrollLeft = scroller.scrollWidth;
    }
  }

  // -- live parts -------------------------------------------------------------------------
  const refresh = window.oprun.refresher(async function () {
    // The same page of tasks as the page shows (its ?cursor=).
    const answer = await window.oprun.fragment(
      "/operations/" + encodeURIComponent(id) + "/live" + window.location.search
    );
    if (answer.status === 404) {
      say("This operation no longer exists.", true);
      return;
    }
    if (!answer.node) return;
    answer.node.querySelectorAll("[data-slot]").forEach(function (fresh) {
      const old = document.querySelector('[data-slot="' + fresh.dataset.slot + '"]');
      if (old) window.oprun.morph(old, fresh);
    });
    showLatestStatus();
  });

  window.oprun.events(root.dataset.after, function (event) {
    if (event.entity_id === id) refresh(id);
  });
  showLatestStatus();

  // -- cancel and retry -------------------------------------------------------------------
  document.addEventListener("click", async function (event) {
    const button = event.target.closest("[data-op-action]");
    if (!button) return;
    const what = button.dataset.opAction;
    button.disabled = true;
    say(what === "cancel" ? "Requesting cancel…" : "Starting a retry…");
    try {
      const response = await fetch(base + ":" + what, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      const answer = await response.json().catch(function () {
        return {};
      });
      if (!response.ok) {
        const reason = answer.error ? answer.error.message : "the server answered " + response.status;
        say("Could not " + what + ": " + reason, true);
        button.disabled = false;
        return;
      }
      if (what === "retry") {
        window.location.assign("/operations/" + encodeURIComponent(answer.id));
        return;
      }
      say("Cancel requested.");
      refresh(id);
    } catch (err) {
      say("Could not " + what + ": " + err.message, true);
      button.disabled = false;
    }
  });

  // -- logs -------------------------------------------------------------------------------
  const box = document.getElementById("log");
  const follow = document.getElementById("log-follow");
  const search = document.getElementById("log-search");
  const count = document.getElementById("log-count");
  const MAX_LINES = 20000;
  let after = parseInt(document.getElementById("logs").dataset.after || "0", 10) || 0;
  let query = "";
  let dropped = 0;

  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

  function highlight(line) {
    const text = line.querySelector(".txt");
    const plain = text.textContent;
    if (!query) {
      line.classList.remove("miss");
      if (text.childElementCount) text.textContent = plain;
      return;
    }
    const lower = plain.toLowerCase();
    let at = lower.indexOf(query);
    if (at < 0) {
      line.classList.add("miss");
      if (text.childElementCount) text.textContent = plain;
      return;
    }
    line.classList.remove("miss");
    const parts = [];
    let from = 0;
    while (at >= 0) {
      parts.push(document.createTextNode(plain.slice(from, at)));
      const mark = document.createElement("mark");
      mark.textContent = plain.slice(at, at + query.length);
      parts.push(mark);
      from = at + query.length;
      at = lower.indexOf(query, from);
    }
    parts.push(document.createTextNode(plain.slice(from)));
    text.replaceChildren(...parts);
  }

  function updateCount() {
    const total = box.children.length;
    const noun = total === 1 ? "line" : "lines";
    let text = total + " " + noun;
    if (query) {
      const hits = total - box.querySelectorAll(".line.miss").length;
      text = hits + " of " + total + " " + noun + " match “" + search.value.trim() + "”";
    }
    if (dropped) text += " (" + dropped + " earlier lines left out here: download for all)";
    count.textContent = text;
  }

  function lineOf(record) {
    const line = document.createElement("div");
    line.className = "line";
    line.dataset.seq = record.seq;
    line.dataset.stream = record.stream;
    const ts = document.createElement("span");
    ts.className = "ts";
    ts.dataset.localclock = record.at;
    ts.textContent = window.oprun.clock(record.at);
    const text = document.createElement("span");
    text.className = "txt";
    text.textContent = record.line;
    line.append(ts, text);
    return line;
  }

  function append(records) {
    const batch = document.createDocumentFragment();
    for (const record of records) {
      const line = lineOf(record);
      if (query) highlight(line);
      batch.append(line);
    }
    box.append(batch);
    while (box.children.length > MAX_LINES) {
      box.firstElementChild.remove();
      dropped += 1;
    }
    if (follow.checked) box.scrollTop = box.scrollHeight;
    updateCount();
  }

  async function followLogs() {
    for (;;) {
      let page;
      try {
        const response = await fetch(
          base + "/logs?after=" + after + "&limit=500&follow=true&wait=20",
          { credentials: "same-origin", cache: "no-store" },
        );
        if (response.status === 401) {
          window.location.reload();
          return;
        }
        if (response.status === 404) return;
        if (!response.ok) {
          await sleep(2000);
          continue;
        }
        page = await response.json();
      } catch (err) {
        await sleep(2000);
        continue;
      }
      if (page.items.length) {
        after = page.items[page.items.length - 1].seq;
        append(page.items);
        continue;
      }
      if (terminal()) return;
      await sleep(250);
    }
  }

  box.addEventListener("scroll", function () {
    const bottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    if (follow.checked !== bottom) follow.checked = bottom;
  });
  follow.addEventListener("change", function () {
    if (follow.checked) box.scrollTop = box.scrollHeight;
  });
  search.addEventListener("input", function () {
    query = search.value.trim().toLowerCase();
    for (const line of box.children) highlight(line);
    updateCount();
  });

  box.scrollTop = box.scrollHeight;
  followLogs();
})();

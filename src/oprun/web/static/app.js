// oprun web UI: what every page shares. Hand-written, no library, no build step.
// Ages tick from the server's clock, times show in the reader's zone, server-rendered
// fragments patch the page in place (so nothing jumps), and the event stream feeds it.
"use strict";

window.oprun = (function () {
  const serverNow = parseFloat(document.body.dataset.now || "0");
  const offset = serverNow > 0 ? serverNow * 1000 - Date.now() : 0;

  /** Seconds since the epoch on the server's clock, not the browser's. */
  function now() {
    return (Date.now() + offset) / 1000;
  }

  /** The same short age as the server's `views.age`. */
  function age(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h";
    return Math.floor(s / 86400) + " d";
  }

  /** The same short duration as the server's `views.duration`. */
  function duration(seconds) {
    const x = Math.max(0, seconds);
    if (x < 1) return Math.floor(x * 1000) + " ms";
    if (x < 10) return x.toFixed(1) + " s";
    const s = Math.floor(x);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function tick() {
    const t = now();
    document.querySelectorAll("[data-since]").forEach(function (el) {
      const since = parseFloat(el.dataset.since);
      if (!isNaN(since)) setText(el, age(t - since));
    });
    document.querySelectorAll("[data-started]").forEach(function (el) {
      const started = parseFloat(el.dataset.started);
      if (isNaN(started) || el.dataset.ended) return;
      setText(el, duration(t - started));
    });
  }

  const pad = (n) => String(n).padStart(2, "0");
  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? iso : pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }
  function stamp(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return iso;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + clock(iso);
  }

  /** Show server (UTC) times in the reader's own time zone. */
  function localize(root) {
    root.querySelectorAll("[data-localclock]").forEach(function (el) {
      setText(el, clock(el.dataset.localclock));
    });
    root.querySelectorAll("time[data-localtime]").forEach(function (el) {
      setText(el, stamp(el.getAttribute("datetime")));
    });
  }

  /** Make `old` look like `fresh`, keeping the elements that did not change (a small morph). */
  function morph(old, fresh) {
    if (old.nodeType !== fresh.nodeType || old.nodeName !== fresh.nodeName) {
      old.replaceWith(fresh);
      return;
    }
    if (old.nodeType === Node.TEXT_NODE || old.nodeType === Node.COMMENT_NODE) {
      if (old.nodeValue !== fresh.nodeValue) old.nodeValue = fresh.nodeValue;
      return;
    }
    if (old.nodeType !== Node.ELEMENT_NODE || old.isEqualNode(fresh)) return;
    for (const attr of Array.from(old.attributes)) {
      if (!fresh.hasAttribute(attr.name)) old.removeAttribute(attr.name);
    }
    for (const attr of Array.from(fresh.attributes)) {
      if (old.getAttribute(attr.name) !== attr.value) old.setAttribute(attr.name, attr.value);
    }
    const was = Array.from(old.childNodes);
    const will = Array.from(fresh.childNodes);
    if (was.length !== will.length) {
      old.replaceChildren(...will);
      return;
    }
    for (let i = 0; i < was.length; i++) morph(was[i], will[i]);
  }

  /** GET a server-rendered fragment: {status, node} (node is null unless 2xx). */
  async function fragment(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    });
    if (response.status === 401) {
      window.location.reload(); // the session ended: the page itself goes to sign-in
      return { status: 401, node: null };
    }
    if (!response.ok) return { status: response.status, node: null };
    const template = document.createElement("template");
    template.innerHTML = (await response.text()).trim();
    localize(template.content);
    return { status: response.status, node: template.content };
  }

  /** Run `load(key)` soon, at most once at a time per key; calls meanwhile coalesce. */
  function refresher(load, delay) {
    const wait = delay || 120;
    const state = new Map();
    return function (key) {
      let s = state.get(key);
      if (!s) {
        s = { busy: false, again: false, timer: 0 };
        state.set(key, s);
      }
      if (s.busy) {
        s.again = true;
        return;
      }
      if (s.timer) return;
      const run = async function () {
        s.timer = 0;
        s.busy = true;
        try {
          await load(key);
        } catch (err) {
          console.warn("oprun: refresh failed", err);
        }
        s.busy = false;
        if (s.again) {
          s.again = false;
          s.timer = setTimeout(run, wait);
        }
      };
      s.timer = setTimeout(run, wait);
    };
  }

  const EVENT_TYPES = [
    "operation.created",
    "operation.status",
    "operation.progress",
    "operation.deleted",
    "worker.registered",
  ];

  /** Follow the project's event stream (GET /v1/events, with the session cookie). */
  function events(after, onEvent) {
    const live = document.getElementById("live");
    const show = function (state, text) {
      if (!live) return;
      live.dataset.state = state;
      setText(live.querySelector(".live-text"), text);
    };
    const url = "/v1/events" + (after ? "?after=" + encodeURIComponent(after) : "");
    const source = new EventSource(url);
    show("retry", "Connecting…");
    source.onopen = function () {
      show("on", "Live");
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        show("off", "Live updates stopped: reload the page");
      } else {
        show("retry", "Reconnecting…"); // EventSource resumes with Last-Event-ID
      }
    };
    for (const type of EVENT_TYPES) {
      source.addEventListener(type, function (message) {
        try {
          onEvent(JSON.parse(message.data));
        } catch (err) {
          console.warn("oprun: bad event", err);
        }
      });
    }
    window.addEventListener("pagehide", function () {
      source.close();
    });
    return source;
  }

  // A page restored from the back-forward cache lost its stream: load it afresh.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) window.location.reload();
  });

  localize(document);
  tick();
  setInterval(tick, 1000);

  return { now, age, duration, clock, localize, morph, fragment, refresher, events };
})();

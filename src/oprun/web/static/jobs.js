// The Jobs page: rows follow the event stream without a reload. Each change fetches the
// row as the server renders it and morphs it in place; new operations slide in on top.
"use strict";

(function () {
  const table = document.getElementById("jobs");
  if (!table) return;
  const body = table.tBodies[0];
  const empty = document.getElementById("jobs-empty");
  const insertNew = table.dataset.liveInsert === "on";
  const filters = {
    status: table.dataset.filterStatus,
    action: table.dataset.filterAction,
    createdBy: table.dataset.filterCreatedBy,
  };

  function matches(row) {
    return (
      (!filters.status || row.dataset.status === filters.status) &&
      (!filters.action || row.dataset.action === filters.action) &&
      (!filters.createdBy || row.dataset.createdBy === filters.createdBy)
    );
  }

  /** Whether an operation not shown belongs on this page: newer than its oldest row. */
  function belongs(id, created) {
    if (!insertNew) return false;
    const rows = body.rows;
    if (created || rows.length === 0) return true;
    return id > rows[rows.length - 1].dataset.id;
  }

  function place(row) {
    const id = row.dataset.id;
    let before = null;
    for (const other of body.rows) {
      if (other.dataset.id < id) {
        before = other;
        break;
      }
    }
    row.classList.add("fresh");
    body.insertBefore(row, before);
    if (empty) empty.hidden = true;
  }

  const created = new Set();
  const refresh = window.oprun.refresher(async function (id) {
    const shown = document.getElementById("row-" + id);
    if (!shown && !belongs(id, created.has(id))) return;
    const answer = await window.oprun.fragment("/jobs/rows/" + encodeURIComponent(id));
    const current = document.getElementById("row-" + id);
    if (answer.status === 404) {
      if (current) current.classList.add("gone");
      return;
    }
    const row = answer.node && answer.node.querySelector("tr");
    if (!row) return;
    if (current) {
      window.oprun.morph(current, row);
    } else if (matches(row)) {
      place(row);
    }
  });

  window.oprun.events(table.dataset.after, function (event) {
    if (!event.type.startsWith("operation.")) return;
    if (event.type === "operation.deleted") {
      const row = document.getElementById("row-" + event.entity_id);
      if (row) row.classList.add("gone");
      return;
    }
    if (event.type === "operation.created") created.add(event.entity_id);
    refresh(event.entity_id);
  });
})();

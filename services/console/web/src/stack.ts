// Labels for phone-width tables (style.css "table.stack"): every cell of a
// table.stack gets data-label = the text of its column's heading, kept up to
// date as screens render (new rows, another language). A cell spanning
// several columns (a form under a row) gets an empty label: full width.
function label(table: HTMLTableElement): void {
  const heads = Array.from(table.tHead?.rows[0]?.cells ?? []).map((c) => (c.textContent ?? '').trim());
  for (const body of Array.from(table.tBodies)) {
    for (const row of Array.from(body.rows)) {
      let col = 0;
      for (const cell of Array.from(row.cells)) {
        const want = cell.colSpan > 1 ? '' : heads[col] ?? '';
        if (cell.getAttribute('data-label') !== want) cell.setAttribute('data-label', want);
        col += cell.colSpan;
      }
    }
  }
}

let queued = false;
function labelAll(): void {
  queued = false;
  document.querySelectorAll<HTMLTableElement>('table.stack').forEach(label);
}

// Attribute changes are not watched: setting the labels does not wake it.
export function watchStackTables(root: Node): void {
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(labelAll);
  }).observe(root, { childList: true, subtree: true, characterData: true });
  labelAll();
}

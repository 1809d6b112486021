// aggregator-harness: evaluated by tests/browser_probe.py on a post page: the visible text of the post body as the
// browser shows it, and the visible text of the article's source HTML rendered by the same
// browser in the same place (same theme CSS), as the oracle. The source is parsed inert
// (DOMParser) and stripped of everything that would load or run before it is inserted; it is
// removed again at once. Returns {actual: {text, pres}, expected: {text, pres}} or null.
(sourceHtml) => {
  const entry = document.querySelector("#main .article-entry");
  if (!entry) return null;
  const read = (el) => ({
    text: el.innerText,
    pres: Array.from(el.querySelectorAll("pre"), (pre) => pre.innerText),
  });
  const actual = read(entry);
  const parsed = new DOMParser().parseFromString(sourceHtml, "text/html");
  for (const el of parsed.querySelectorAll("script, style, link, iframe, object, embed, img, picture, source, video, audio")) {
    el.remove();
  }
  for (const el of parsed.querySelectorAll("*")) {
    for (const attr of Array.from(el.attributes)) {
      if (/^(on|src|href|style|background|poster)/i.test(attr.name)) el.removeAttribute(attr.name);
    }
  }
  const oracle = document.createElement("div");
  oracle.className = entry.className;
  // (a copy of the list first: moving a node out of the live childNodes shifts the rest)
  oracle.append(...Array.from(parsed.body.childNodes));
  entry.after(oracle);
  const expected = read(oracle);
  oracle.remove();
  return { actual, expected };
}

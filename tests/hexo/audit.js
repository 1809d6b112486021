// aggregator-harness: evaluated by tests/browser_probe.py on each page once it has loaded and the theme's scripts
// have run: what is live in the DOM without anyone clicking. Returns
// {instrumented, findings: [{kind, detail, html}], title, entryText}.
// `options.proxy` is the image proxy prefix; `options.content` the selector of the elements
// that hold what posts put on a page (article bodies, titles, widgets).
(options) => {
  const findings = [];
  const snippet = (el) => (el.outerHTML || String(el)).slice(0, 240);
  const add = (kind, detail, el) => findings.push({ kind, detail: String(detail).slice(0, 240), html: el ? snippet(el) : "" });
  const scheme = (value) => {
    try {
      return new URL(value, document.baseURI).protocol;
    } catch (e) {
      return null;
    }
  };
  const ACTIVE_SCHEMES = new Set(["javascript:", "vbscript:"]);
  const URL_ATTRIBUTES = [
    "href", "src", "action", "formaction", "data", "poster", "background", "lowsrc", "dynsrc",
    "ping", "xlink:href", "codebase", "archive", "manifest", "icon", "srcdoc",
  ];
  const IMAGE_SOURCES = new Set(["img:src", "input:src", "video:poster", "image:href", "image:xlink:href"]);

  for (const el of document.querySelectorAll("*")) {
    for (const attr of Array.from(el.attributes)) {
      const name = attr.name.toLowerCase();
      if (name.startsWith("on")) add("event-handler-attribute", name + "=" + attr.value, el);
      if (name === "srcdoc") add("srcdoc", attr.value, el);
      if (name === "style" && /url\s*\(|expression\s*\(|-moz-binding|behavior\s*:/i.test(attr.value)) {
        add("style-with-url-or-expression", attr.value, el);
      }
      if (!URL_ATTRIBUTES.includes(name) || name === "srcdoc") continue;
      const s = scheme(attr.value);
      const tag = el.localName;
      if (ACTIVE_SCHEMES.has(s)) add("active-url", `${tag}[${name}] ${attr.value}`, el);
      else if (s === "data:" && !IMAGE_SOURCES.has(`${tag}:${name}`)) {
        add("data-url-outside-image", `${tag}[${name}] ${attr.value.slice(0, 80)}`, el);
      }
    }
  }
  for (const meta of document.querySelectorAll("meta[http-equiv]")) {
    if (/refresh|set-cookie|content-security-policy/i.test(meta.httpEquiv)) add("meta-http-equiv", meta.httpEquiv, meta);
  }
  for (const base of document.querySelectorAll("base")) add("base-element", base.href, base);

  // Elements a post must never bring along (the theme has none inside its content columns).
  const FORBIDDEN = "script, style, link, meta, iframe, frame, frameset, object, embed, applet, form, input, button, textarea, select, svg, math, template, noscript, portal, dialog[open]";
  const containers = Array.from(document.querySelectorAll(options.content));
  for (const container of containers) {
    for (const el of container.querySelectorAll(FORBIDDEN)) add("forbidden-element", el.localName, el);
  }

  // Images and media posters must go through the image proxy (data: images are fine).
  const proxied = (url) => url.startsWith(options.proxy) || url.startsWith("data:") || url === "";
  for (const container of containers) {
    for (const el of container.querySelectorAll("img, image, input[type=image], video[poster], source")) {
      const tag = el.localName;
      const urls = [];
      if (tag === "img" || tag === "input") urls.push(el.getAttribute("src") && el.src);
      if (tag === "image") urls.push(el.getAttribute("href") || el.getAttribute("xlink:href"));
      if (tag === "video") urls.push(el.poster);
      if (tag === "source" && el.closest("picture")) urls.push(el.getAttribute("src") && el.src);
      for (const set of [el.getAttribute("srcset")]) {
        if (!set) continue;
        for (const part of set.split(/,\s+/)) urls.push(new URL(part.trim().split(/\s+/)[0], document.baseURI).href);
      }
      for (const url of urls) {
        if (url && !proxied(url)) add("unproxied-image", `${tag} ${url}`, el);
      }
    }
  }

  const title = document.querySelector("#main .article-title");
  const entry = document.querySelector("#main .article-entry");
  return {
    instrumented: window.__aggregator_harness_installed === true,
    findings,
    title: title ? title.innerText : null,
    entryText: entry ? entry.innerText : null,
  };
}

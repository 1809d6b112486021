// Render every post of a Hexo site one by one, as `hexo generate` would (tags, Nunjucks,
// Markdown, filters), and print which ones fail: {"<file name>": "<error>" | null} as JSON.
// `hexo generate` stops at the first post that fails; tests/hexo_site.py uses this to find all
// of them in one run. Usage: node render_each.js <site directory> [config files]
"use strict";

const path = require("path");

// A payload may leave an error behind (a failed request it started): note it, carry on.
const stray = [];
process.on("uncaughtException", (error) => stray.push(String(error).slice(0, 500)));

async function main() {
  const base = path.resolve(process.argv[2]);
  const config = process.argv[3];
  const Hexo = require(path.join(base, "node_modules", "hexo"));
  const hexo = new Hexo(base, { silent: true, ...(config ? { config } : {}) });
  await hexo.init();
  await Promise.all([hexo.source.process(), hexo.theme.process()]);
  const result = {};
  for (const post of hexo.model("Post").toArray()) {
    const name = path.basename(post.source);
    try {
      post.content = post._content;
      await hexo.post.render(post.full_source, post);
      result[name] = null;
    } catch (error) {
      result[name] = String((error && error.stack) || error).slice(0, 2000);
    }
  }
  if (stray.length) result["(uncaught errors)"] = stray.join("\n");
  process.stdout.write(JSON.stringify(result));
  await hexo.exit();
}

main().catch((error) => {
  process.stderr.write(String((error && error.stack) || error));
  process.exit(1);
});

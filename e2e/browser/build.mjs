// Bundles host.mjs (and the ext-apps host bridge it imports) into one browser script.
import { build } from "esbuild";

const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUT.js");
  process.exit(2);
}
await build({
  entryPoints: [new URL("./host.mjs", import.meta.url).pathname],
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2022",
  outfile: out,
  logLevel: "warning",
});

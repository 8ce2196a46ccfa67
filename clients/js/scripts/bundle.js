// dist/browser/baton.js: the package as one ES module with noVNC and the
// Socket.IO client inside, for pages that import it from the edge
// (/assets/clients/baton.js) with no bundler of their own.
import { build } from "esbuild";

await build({
  entryPoints: ["src/index.ts"],
  outfile: "dist/browser/baton.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  legalComments: "eof",
  logLevel: "warning",
});

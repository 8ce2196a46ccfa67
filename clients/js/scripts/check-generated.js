// src/openapi.ts must be what openapi-typescript makes of docs/openapi.json now
// (run by `make lint`; regenerate with `npm --prefix clients/js run generate`).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const dir = mkdtempSync(join(tmpdir(), "baton-openapi-"));
try {
  const fresh = join(dir, "openapi.ts");
  execFileSync(
    process.execPath,
    ["node_modules/openapi-typescript/bin/cli.js", "../../docs/openapi.json", "-o", fresh],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
  if (readFileSync(fresh, "utf8") !== readFileSync("src/openapi.ts", "utf8")) {
    console.error(
      "clients/js/src/openapi.ts is out of date with docs/openapi.json: " +
        "run `npm --prefix clients/js run generate` and commit",
    );
    process.exit(1);
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

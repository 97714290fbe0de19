// Fails when src/api/schema.ts no longer matches openapi.json (the server's schema): run `npm run gen:api`.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const here = new URL("..", import.meta.url).pathname;
const spec = join(here, "openapi.json");
const committed = join(here, "src/api/schema.ts");
if (!existsSync(spec)) {
  console.error("api types: web/openapi.json is missing (it is exported from the server's OpenAPI schema)");
  process.exit(1);
}
const dir = mkdtempSync(join(tmpdir(), "deepscope-api-"));
try {
  const fresh = join(dir, "schema.ts");
  execFileSync(join(here, "node_modules/.bin/openapi-typescript"), [spec, "-o", fresh], { stdio: "pipe" });
  if (readFileSync(fresh, "utf8") !== readFileSync(committed, "utf8")) {
    console.error("api types: src/api/schema.ts is out of date with openapi.json; run `npm run gen:api`");
    process.exit(1);
  }
  console.log("api types: src/api/schema.ts matches openapi.json");
} finally {
  rmSync(dir, { recursive: true, force: true });
}

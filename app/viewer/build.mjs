// Copies the vendored OpenSeadragon build from node_modules into static/ (committed, so a
// clean clone needs no npm). Run: npm --prefix app/viewer ci && npm --prefix app/viewer run build
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const osd = join(here, "node_modules", "openseadragon");
const version = JSON.parse(readFileSync(join(osd, "package.json"), "utf8")).version;
mkdirSync(join(here, "static"), { recursive: true });
copyFileSync(join(osd, "build", "openseadragon", "openseadragon.min.js"), join(here, "static", "openseadragon.min.js"));
copyFileSync(join(osd, "LICENSE.txt"), join(here, "static", "LICENSE-openseadragon.txt"));
console.log(`OpenSeadragon ${version} copied to ${join(here, "static")}`);

// Runs Python files on the official MicroPython WebAssembly port under Node:
//   node run_micropython.mjs PACKAGE_DIR ENTRY.py FILE.py...
// Every FILE is copied into MicroPython's filesystem root (flat, as `evse mcu deploy` puts them on the
// RP2040), then ENTRY runs; its output goes to stdout, a Python exception to stderr with exit status 1.
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { pathToFileURL } from "node:url";

const [packageDir, entry, ...files] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(join(packageDir, "micropython.mjs")).href);
const mp = await loadMicroPython({
  heapsize: 256 * 1024, // the RP2040 has 264 KiB of RAM; MicroPython gets about 190 KiB of it
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});
for (const file of files) {
  mp.FS.writeFile("/" + basename(file), readFileSync(file));
}
try {
  mp.runPython(readFileSync(entry, "utf8"));
} catch (error) {
  process.stderr.write(String(error) + "\n");
  process.exit(1);
}

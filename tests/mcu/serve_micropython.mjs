// The co-processor firmware on MicroPython as a serial device:
//   node serve_micropython.mjs PACKAGE_DIR SERVE.py FILE.py...
// stdin: one JSON command per line, {"rx": hex} (bytes from the Pi), {"plant": [name, value]},
// {"query": "coil" | "mode"}; stdout: one JSON line per reply, {"tx": hex} for frames to the Pi
// (also sent unasked as the firmware ticks every millisecond of real time) and {"answer": value}.
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

const [packageDir, serve, ...files] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(join(packageDir, "micropython.mjs")).href);
const mp = await loadMicroPython({
  heapsize: 256 * 1024,
  stdout: (line) => process.stderr.write("mpy: " + line + "\n"),
  stderr: (line) => process.stderr.write("mpy: " + line + "\n"),
});
for (const file of files) mp.FS.writeFile("/" + basename(file), readFileSync(file));
mp.FS.writeFile("/serve_entry.py", readFileSync(serve));
const start = Date.now();
const now = () => Date.now() - start;
const api = mp.pyimport("serve_entry");
// Python values come back as JS strings / numbers / booleans, or as proxies: String() reads either.
const send = (hex) => {
  const text = String(hex);
  if (text) process.stdout.write(JSON.stringify({ tx: text }) + "\n");
};

const timer = setInterval(() => send(api.tick(now())), 1);
createInterface({ input: process.stdin }).on("line", (line) => {
  const cmd = JSON.parse(line);
  if ("rx" in cmd) send(api.rx(cmd.rx, now()));
  else if ("plant" in cmd) api.plant(cmd.plant[0], cmd.plant[1]);
  else if ("query" in cmd) process.stdout.write(JSON.stringify({ answer: String(api[cmd.query]()) }) + "\n");
}).on("close", () => { clearInterval(timer); process.exit(0); });

// node render.cjs LABEL.zpl OUT.png WIDTH_MM HEIGHT_MM DOTS_PER_MM — one ZPL label to one PNG, offline.
// Go's WebAssembly runtime needs globalThis.crypto, which Node only provides unflagged from 19 (Debian 12: 18).
if (!globalThis.crypto) globalThis.crypto = require("node:crypto").webcrypto;
const { ready } = require("zpl-renderer-js");
const fs = require("node:fs");

(async () => {
  const [zplPath, pngPath, width, height, dpmm] = process.argv.slice(2);
  const { api } = await ready;
  const png = await api.zplToBase64Async(fs.readFileSync(zplPath, "utf8"), Number(width), Number(height), Number(dpmm));
  fs.writeFileSync(pngPath, Buffer.from(png, "base64"));
})().catch((error) => {
  console.error(`ZPL rendering failed: ${error}`);
  process.exit(1);
});

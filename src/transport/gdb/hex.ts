import { ProtocolError } from "../../util/errors.js";

/** Hex text of a reply, checked: a stub that sends non-hex where hex belongs broke the protocol. */
export function hexToBytes(text: string, what: string): Buffer {
  // Buffer.from stops at the first non-hex pair, so a full-length result means all of it was hex.
  const bytes = Buffer.from(text, "hex");
  if (bytes.length * 2 !== text.length) {
    throw new ProtocolError("E_GDB_BAD_REPLY", `gdbstub sent malformed hex for ${what}: ${preview(text)}`);
  }
  return bytes;
}

export function bytesToHex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

export function littleEndianToBigInt(bytes: Uint8Array): bigint {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]!);
  return v;
}

export function bigIntToLittleEndian(value: bigint, size: number): Buffer {
  const out = Buffer.alloc(size);
  let v = value;
  for (let i = 0; i < size; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

export function parseHexNumber(text: string, what: string): bigint {
  if (!/^[0-9a-fA-F]{1,32}$/.test(text)) {
    throw new ProtocolError(
      "E_GDB_BAD_REPLY",
      `gdbstub sent a malformed number for ${what}: ${preview(text)}`,
    );
  }
  return BigInt(`0x${text}`);
}

export function preview(text: string, max = 80): string {
  const printable = text.replace(/[^\x20-\x7e]/g, ".");
  return printable.length > max ? `${printable.slice(0, max)}…` : printable;
}

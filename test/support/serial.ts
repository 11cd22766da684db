/** The serial console client lives in src/target (the demo uses it too). */
export * from "../../src/qemu/serial-console.js";

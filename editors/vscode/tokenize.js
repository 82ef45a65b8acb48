// Tokenizes a .policy file with the extension's TextMate grammar, the way VS Code does
// (vscode-textmate + the Oniguruma regex engine), and prints every token's text and scopes as
// JSON: one list per line of {"text", "scopes"}. Used by the project's tests.
//   node tokenize.js FILE
"use strict";
const fs = require("fs");
const path = require("path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const grammarPath = path.join(__dirname, "syntaxes", "policy.tmLanguage.json");

async function main(file) {
  const wasm = fs.readFileSync(path.join(path.dirname(require.resolve("vscode-oniguruma")), "onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (text) => new oniguruma.OnigString(text),
    }),
    loadGrammar: async (scopeName) =>
      scopeName === "source.policy" ? vsctm.parseRawGrammar(fs.readFileSync(grammarPath, "utf8"), grammarPath) : null,
  });
  const grammar = await registry.loadGrammar("source.policy");
  let stack = vsctm.INITIAL;
  const lines = [];
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    const result = grammar.tokenizeLine(line, stack);
    lines.push(result.tokens.map((t) => ({ text: line.slice(t.startIndex, t.endIndex), scopes: t.scopes })));
    stack = result.ruleStack;
  }
  process.stdout.write(JSON.stringify(lines) + "\n");
}

main(process.argv[2]).catch((error) => {
  console.error(error);
  process.exit(1);
});

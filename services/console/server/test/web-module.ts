// Console web modules (web/src/...) loaded into a node test: transpiled to
// an ES module in a fresh folder under dist/ (next to node_modules, so their
// package imports resolve), each module's imports rewritten as the test
// needs. The folder goes in `cleanUp`.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import ts from 'typescript';
import { consoleDir } from './harness.js';

export class WebModules {
  readonly dir: string;
  constructor(prefix: string) {
    this.dir = fs.mkdtempSync(path.join(consoleDir, 'dist', prefix));
  }
  // web/src/<source> written as <name>.mjs, after `rewrite`.
  write(source: string, name: string, rewrite: (js: string) => string = (js) => js): void {
    const src = fs.readFileSync(path.join(consoleDir, 'web', 'src', source), 'utf8');
    const js = ts.transpileModule(src, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
    fs.writeFileSync(path.join(this.dir, `${name}.mjs`), rewrite(js));
  }
  // A module of the test's own (a stub) as <name>.mjs.
  stub(name: string, js: string): void {
    fs.writeFileSync(path.join(this.dir, `${name}.mjs`), js);
  }
  async load<T>(name: string): Promise<T> {
    return (await import(pathToFileURL(path.join(this.dir, `${name}.mjs`)).href)) as T;
  }
  cleanUp(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

import { Environment } from '@huggingface/jinja';

/**
 * @huggingface/jinja (0.5.x) ignores the argument of `str.strip(chars)`, `lstrip` and `rstrip`
 * and always trims whitespace, where Jinja2 (transformers) strips the given characters only.
 * Qwen3's template writes `content.lstrip('\n')`, so an answer that starts with spaces lost them
 * in our rendering and kept them in transformers' (test/template-parity.test.ts). The library keeps
 * its string methods on an unexported class; this gives those three their `chars` argument, once,
 * on that class's prototype. The same bug was fixed in huggingface/swift-jinja#65; drop this when
 * the JavaScript library does the same.
 */
type Builtins = Map<string, unknown>;
interface Value {
  value: unknown;
}

function patch(): void {
  const env = new Environment();
  env.set('probe', '');
  const proto = Object.getPrototypeOf(env.lookupVariable('probe')) as object;
  const descriptor = Object.getOwnPropertyDescriptor(proto, 'builtins');
  const original = descriptor?.get;
  if (!original) throw new Error('@huggingface/jinja changed: StringValue has no builtins getter to extend');
  const patched = new WeakSet<Builtins>();
  Object.defineProperty(proto, 'builtins', {
    configurable: true,
    get(this: Value & { constructor: new (value: string) => unknown }) {
      const builtins = original.call(this) as Builtins;
      if (patched.has(builtins)) return builtins;
      const FunctionValue = (builtins.get('strip') as { constructor: new (fn: (args: Value[]) => unknown) => unknown }).constructor;
      const text = this.value as string;
      const make = (trim: (chars: string | null) => string) =>
        new FunctionValue((args) => new this.constructor(trim(typeof args[0]?.value === 'string' ? args[0].value : null)));
      builtins.set('strip', make((chars) => (chars === null ? text.trim() : stripEnd(stripStart(text, chars), chars))));
      builtins.set('lstrip', make((chars) => (chars === null ? text.trimStart() : stripStart(text, chars))));
      builtins.set('rstrip', make((chars) => (chars === null ? text.trimEnd() : stripEnd(text, chars))));
      patched.add(builtins);
      return builtins;
    },
  });
}

function stripStart(text: string, chars: string): string {
  let i = 0;
  while (i < text.length && chars.includes(text[i]!)) i++;
  return text.slice(i);
}

function stripEnd(text: string, chars: string): string {
  let i = text.length;
  while (i > 0 && chars.includes(text[i - 1]!)) i--;
  return text.slice(0, i);
}

patch();

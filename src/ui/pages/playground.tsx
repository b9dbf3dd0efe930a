import type { ChatCompletionMessageParam } from 'openai/resources/chat/completions';
import { useEffect, useRef, useState } from 'preact/hooks';
import { get, streamChat, type List, type Model } from '../api.js';
import { ErrorMessage, PageHeader } from '../components/common.js';
import { useLoad } from '../components/use-load.js';
import { href } from '../router.js';
import { modelKind, parseFineTunedName } from './models.js';
import './playground.css';

interface Answer {
  text: string;
  done: boolean;
  error?: string;
  completionTokens?: number;
  seconds?: number;
  finishReason?: string | null;
  /** Which backend answered, from the chunks' `system_fingerprint`. */
  backend?: string;
}

/** tunelab's fingerprints: `fp_tunelab` for its engine, `fp_tunelab_llamacpp_<quantization>` for llama.cpp. */
export function backendOf(fingerprint: string | null | undefined): string | undefined {
  if (!fingerprint) return undefined;
  const quantization = /^fp_tunelab_llamacpp_(.+)$/.exec(fingerprint)?.[1];
  if (quantization) return `llama.cpp (${quantization})`;
  return fingerprint === 'fp_tunelab' ? 'tunelab engine' : undefined;
}

/** One question asked of both models, and each one's answer. */
interface Turn {
  user: string;
  answers: [Answer, Answer];
}

const SIDES = [0, 1] as const;
type Side = (typeof SIDES)[number];
const SIDE_NAMES = ['Left', 'Right'] as const;

/**
 * Unless the address names them: a base model on the left and, on the right, its newest
 * fine-tune (or the newest of any base); a fine-tune named alone gets what it was trained from
 * beside it (its base, or the fine-tune it continued: a DPO model beside its supervised start).
 */
function defaultModels(models: Model[], left: string | null, right: string | null): [string, string] {
  const newestFirst = models.filter((model) => modelKind(model) === 'fine-tune').sort((a, b) => b.created - a.created);
  const trainedFrom = (id: string) => (models.find((model) => model.id === id) as (Model & { fine_tuned_from?: string }) | undefined)?.fine_tuned_from;
  const leftModel = left ?? (right ? (trainedFrom(right) ?? parseFineTunedName(right)?.base) : undefined) ?? models.find((model) => modelKind(model) === 'base')?.id ?? models[0]?.id ?? '';
  const ownTune = newestFirst.find((model) => parseFineTunedName(model.id)?.base === leftModel);
  return [leftModel, right ?? ownTune?.id ?? newestFirst[0]?.id ?? leftModel];
}

function ModelSelect({ label, id, value, models, onChange }: { label: string; id: string; value: string; models: Model[]; onChange: (id: string) => void }) {
  const groups: Array<[string, Model[]]> = [
    ['Base models', models.filter((model) => modelKind(model) === 'base')],
    ['Fine-tuned models', models.filter((model) => modelKind(model) === 'fine-tune')],
    ['Checkpoints', models.filter((model) => modelKind(model) === 'checkpoint')],
  ];
  return (
    <div class="field">
      <label for={id}>{label}</label>
      <select id={id} value={value} onChange={(e) => onChange(e.currentTarget.value)}>
        {!models.some((model) => model.id === value) && <option value={value}>{value}</option>}
        {groups
          .filter(([, list]) => list.length)
          .map(([name, list]) => (
            <optgroup key={name} label={name}>
              {list.map((model) => (
                <option key={model.id} value={model.id}>
                  {model.id}
                </option>
              ))}
            </optgroup>
          ))}
      </select>
    </div>
  );
}

/** Two models side by side: one system prompt and one conversation, each model answering with its own earlier answers as history. */
export function PlaygroundPage({ left, right }: { left: string | null; right: string | null }) {
  const models = useLoad((signal) => get<List<Model>>('/models', undefined, signal), []);
  const [chosen, setChosen] = useState<[string, string] | null>(null);
  const [system, setSystem] = useState('');
  // Kept as typed: a number state would turn a field cleared to retype into 0 or 1 at once.
  const [temperature, setTemperature] = useState('0');
  const [maxTokens, setMaxTokens] = useState('256');
  const [turns, setTurns] = useState<Turn[]>([]);
  const [draft, setDraft] = useState('');
  const [running, setRunning] = useState<AbortController | null>(null);
  const runningRef = useRef<AbortController | null>(null);
  runningRef.current = running;
  const endOfPanes = useRef<HTMLDivElement>(null);

  const list = models.data?.data;
  const selected = chosen ?? (list ? defaultModels(list, left, right) : null);

  // The URL follows the choice, so a reload or a shared link opens the same pair.
  useEffect(() => {
    if (chosen) history.replaceState(null, '', href('playground', { left: chosen[0], right: chosen[1] }));
  }, [chosen]);
  // Leaving the page stops the answers still streaming, which frees the engine's slots.
  useEffect(() => () => runningRef.current?.abort(), []);
  useEffect(() => endOfPanes.current?.scrollIntoView?.({ block: 'nearest' }), [turns.length]);

  const choose = (side: Side, id: string) => {
    if (!selected) return;
    const next: [string, string] = [...selected];
    next[side] = id;
    setChosen(next);
  };

  const updateAnswer = (index: number, side: Side, change: (answer: Answer) => Answer) =>
    setTurns((all) => all.map((turn, i) => (i === index ? { ...turn, answers: turn.answers.map((a, s) => (s === side ? change(a) : a)) as [Answer, Answer] } : turn)));

  const ask = async (side: Side, model: string, history: Turn[], question: string, index: number, signal: AbortSignal) => {
    const messages: ChatCompletionMessageParam[] = [];
    if (system.trim()) messages.push({ role: 'system', content: system });
    // A turn this model failed or was stopped on is left out: it never gave that answer.
    for (const turn of history) {
      if (!turn.answers[side].error) messages.push({ role: 'user', content: turn.user }, { role: 'assistant', content: turn.answers[side].text });
    }
    messages.push({ role: 'user', content: question });
    const started = performance.now();
    try {
      const sampling = { temperature: Number(temperature), max_tokens: Number(maxTokens) };
      for await (const chunk of streamChat({ model, messages, ...sampling, stream_options: { include_usage: true } }, signal)) {
        const choice = chunk.choices[0];
        const delta = choice?.delta.content ?? '';
        updateAnswer(index, side, (answer) => ({
          ...answer,
          text: answer.text + delta,
          finishReason: choice?.finish_reason ?? answer.finishReason,
          completionTokens: chunk.usage?.completion_tokens ?? answer.completionTokens,
          backend: backendOf(chunk.system_fingerprint) ?? answer.backend,
        }));
      }
      updateAnswer(index, side, (answer) => ({ ...answer, done: true, seconds: (performance.now() - started) / 1000 }));
    } catch (error) {
      const stopped = signal.aborted;
      updateAnswer(index, side, (answer) => ({ ...answer, done: true, error: stopped ? 'Stopped.' : (error as Error).message }));
    }
  };

  const send = async (event?: Event) => {
    event?.preventDefault();
    const question = draft.trim();
    if (!question || !selected || running) return;
    const abort = new AbortController();
    const index = turns.length;
    const history = turns;
    setTurns([...turns, { user: question, answers: [{ text: '', done: false }, { text: '', done: false }] }]);
    setDraft('');
    setRunning(abort);
    await Promise.all(SIDES.map((side) => ask(side, selected[side], history, question, index, abort.signal)));
    setRunning(null);
  };

  return (
    <>
      <PageHeader title="Playground">
        <button class="secondary" onClick={() => setTurns([])} disabled={!turns.length || running !== null}>
          Clear conversation
        </button>
      </PageHeader>
      <ErrorMessage error={models.error} />
      {selected && list && (
        <div class="playground">
          <div class="settings panel">
            {SIDES.map((side) => (
              <ModelSelect key={side} label={`${SIDE_NAMES[side]} model`} id={`model-${side}`} value={selected[side]} models={list} onChange={(id) => choose(side, id)} />
            ))}
            <div class="field">
              <label for="temperature">Temperature</label>
              <input id="temperature" type="number" min={0} max={2} step={0.1} value={temperature} onInput={(e) => setTemperature(e.currentTarget.value)} />
            </div>
            <div class="field">
              <label for="max-tokens">Max tokens</label>
              <input id="max-tokens" type="number" min={1} step={1} value={maxTokens} onInput={(e) => setMaxTokens(e.currentTarget.value)} />
            </div>
            <div class="field wide">
              <label for="system">System prompt</label>
              <textarea id="system" rows={2} value={system} onInput={(e) => setSystem(e.currentTarget.value)} placeholder="Optional: the system message both models get first" />
            </div>
          </div>

          <div class="panes">
            {SIDES.map((side) => (
              <section key={side} class="pane panel" aria-label={`${SIDE_NAMES[side]}: ${selected[side]}`} aria-busy={running !== null}>
                <h2 class="mono">{selected[side]}</h2>
                {turns.length === 0 && <p class="muted">Answers from this model appear here.</p>}
                {turns.map((turn, index) => {
                  const answer = turn.answers[side];
                  return (
                    <div key={index} class="turn">
                      <p class="message user">{turn.user}</p>
                      <p class="message assistant" data-done={answer.done}>
                        {answer.text || (!answer.done && <span class="muted">…</span>)}
                      </p>
                      {answer.error && <p class="error">{answer.error}</p>}
                      {answer.done && !answer.error && (
                        <p class="meta muted">
                          {answer.completionTokens ?? '?'} tokens in {answer.seconds?.toFixed(1)} s{answer.finishReason === 'length' ? ' · cut at max tokens' : ''}
                          {answer.backend ? ` · answered by ${answer.backend}` : ''}
                        </p>
                      )}
                    </div>
                  );
                })}
              </section>
            ))}
            <div ref={endOfPanes} />
          </div>

          <form class="composer" onSubmit={send}>
            <label for="message" class="visually-hidden">
              Message
            </label>
            <textarea
              id="message"
              rows={2}
              value={draft}
              placeholder="Ask both models (Enter sends, Shift+Enter starts a new line)"
              onInput={(e) => setDraft(e.currentTarget.value)}
              onKeyDown={(e) => {
                if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) send(e);
              }}
            />
            {running ? (
              <button type="button" class="danger" onClick={() => running.abort()}>
                Stop
              </button>
            ) : (
              <button type="submit" disabled={!draft.trim()}>
                Send
              </button>
            )}
          </form>
        </div>
      )}
    </>
  );
}


/** A bar on stderr for long work over bytes; nothing when stderr is not a terminal (pipes, CI logs). */
export async function progressBar(label: string, totalBytes: number): Promise<{ update(done: number): void; stop(): void }> {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const { default: cliProgress } = await import('cli-progress');
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% {value}/{total} bytes`, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  );
  bar.start(totalBytes, 0);
  return { update: (done) => bar.update(Math.min(done, totalBytes)), stop: () => bar.stop() };
}

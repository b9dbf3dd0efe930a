/** A bar on stderr for long work over bytes, with the rate; nothing when stderr is not a terminal (pipes, CI logs). */
export async function progressBar(label: string, totalBytes: number): Promise<{ update(done: number): void; stop(): void }> {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const { default: cliProgress } = await import('cli-progress');
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% {done} of {size} {rate}`, stream: process.stderr },
    cliProgress.Presets.shades_classic,
  );
  const started = performance.now();
  const payload = (done: number) => ({
    done: megabytes(done),
    size: megabytes(totalBytes),
    rate: `${megabytes(done / Math.max((performance.now() - started) / 1000, 1e-3))}/s`,
  });
  bar.start(totalBytes, 0, payload(0));
  return {
    update: (done) => bar.update(Math.min(done, totalBytes), payload(done)),
    stop: () => bar.stop(),
  };
}

const megabytes = (bytes: number) => `${(bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0)} MB`;

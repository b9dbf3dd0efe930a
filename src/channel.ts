/**
 * Items pushed by any number of producers and read by one consumer, in order. A failure ends it at
 * once (items still queued are dropped: the consumer is stopping anyway).
 */
export class Channel<T> {
  private readonly queue: T[] = [];
  private wake: (() => void) | null = null;
  private ended = false;
  private error: { cause: unknown } | null = null;

  push(item: T): void {
    this.queue.push(item);
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(cause: unknown): void {
    this.error ??= { cause };
    this.notify();
  }

  async *drain(): AsyncGenerator<T> {
    for (;;) {
      if (this.error) throw this.error.cause;
      const item = this.queue.shift();
      if (item !== undefined) {
        yield item;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    this.wake?.();
    this.wake = null;
  }
}

/**
 * A pass over some work list, run whenever kicked, one pass at a time: a kick during a pass runs
 * another after it, so work that arrives mid-pass is never missed. The validation step and the
 * runner each look for their jobs this way.
 */
export class WorkLoop {
  private running: Promise<void> | null = null;
  private again = false;
  private stoppedFlag = false;

  constructor(
    private readonly pass: () => Promise<void>,
    private readonly onError: (error: unknown) => void,
  ) {}

  get stopped(): boolean {
    return this.stoppedFlag;
  }

  kick(): void {
    if (this.stoppedFlag) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch(this.onError)
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  /** No more passes; resolves when the one under way ends (a pass checks `stopped` to end early). */
  async stop(): Promise<void> {
    this.stoppedFlag = true;
    await this.running;
  }
}

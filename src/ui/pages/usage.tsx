export function UsagePage(_props: Record<string, unknown>) {
  return <p>Usage</p>;
}

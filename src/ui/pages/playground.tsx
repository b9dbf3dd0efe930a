export function PlaygroundPage(_props: Record<string, unknown>) {
  return <p>Playground</p>;
}

export function FilePage(_props: Record<string, unknown>) {
  return <p>File</p>;
}

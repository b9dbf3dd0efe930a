export function ModelsPage(_props: Record<string, unknown>) {
  return <p>Models</p>;
}

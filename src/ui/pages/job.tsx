export function JobPage(_props: Record<string, unknown>) {
  return <p>Job</p>;
}

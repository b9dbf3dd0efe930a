export function FilesPage(_props: Record<string, unknown>) {
  return <p>Files</p>;
}

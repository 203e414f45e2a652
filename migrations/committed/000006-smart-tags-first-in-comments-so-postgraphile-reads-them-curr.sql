--! Previous: sha1:0bf139049c4e7908ee02b4a8d12ea7c660b79ebe
--! Hash: sha1:ceace8c9a420b8b19a7db655eb2f1bd17a419ba6
--! Message: Smart tags first in comments, so PostGraphile reads them; current_load stays orderable

-- agent_availability.current_load left the index key in 000005 (so load changes are HOT updates);
-- agent lists are small, so ordering and filtering by load stays available in the API.
-- PostGraphile reads smart tags only from the start of a comment, so the tag comes first.
comment on column app_public.agent_availability.current_load is $$@behavior +orderBy +filterBy
Leads the agent holds now (accepted and not yet closed), plus pending offers, which reserve capacity.$$;

-- Earlier migrations put "@behavior …" at the end of some comments, where PostGraphile shows it as
-- part of the description instead of reading it as a tag. Move such trailing tag lines to the front.
do $$
declare
  r record;
begin
  for r in
    select o.type, o.identity, d.description,
           pg_catalog.substring(d.description, '\n(@behavior [^\n]*)$') as tag
      from pg_catalog.pg_description d
      join pg_catalog.pg_namespace n on n.nspname = 'app_public'
      cross join lateral pg_catalog.pg_identify_object(d.classoid, d.objoid, d.objsubid) o
     where o.schema = n.nspname and d.description ~ '\n@behavior [^\n]*$'
  loop
    execute pg_catalog.format('comment on %s %s is %L', r.type, r.identity,
      r.tag || E'\n' || pg_catalog.regexp_replace(r.description, '\n@behavior [^\n]*$', ''));
  end loop;
end
$$;

--! Previous: sha1:549e33d663211c79d502b31d890a08366d8dc20e
--! Hash: sha1:7e5b65a60a32ef88e88c7bb4e5bf485fcefe2035
--! Message: sms_send_windows is no GraphQL Node: its node fetcher collided with the sms_send_window function

-- The reference table of send windows is no GraphQL Node: its node fetcher smsSendWindow(id) collided with the
-- function sms_send_window (PostGraphile logged a naming conflict at every start).
comment on table app_public.sms_send_windows is $$@behavior -type:node
Reference data shared by every tenant (read-only): the local hours in which marketing and nurture texts may reach a recipient, per weekday. Jurisdiction US is the US federal rule (TCPA: 8:00 to 21:00 every day) and CA the Canadian one (CRTC: 9:00 to 21:30 on weekdays, 10:00 to 18:00 at weekends); US-XX rows are stricter state rules (Florida, Maryland, Mississippi, New Jersey and Oklahoma 8:00 to 20:00; Connecticut 9:00 to 20:00; Texas 9:00 to 21:00 Monday to Saturday and 12:00 to 21:00 on Sunday; Rhode Island 9:00 to 18:00 on weekdays and 10:00 to 17:00 at weekends). A text must fall inside every window that applies. State holiday bans are not modelled. Not legal advice: review against current law before relying on it.$$;

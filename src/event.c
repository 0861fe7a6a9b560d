/* Names of event sources (see event.h). Pure. */
#include "event.h"

#include <strings.h>

static const char *const source_names[EVENT_SOURCE_COUNT] = {
	[EVENT_SOURCE_CALLBACK] = "callback",
	[EVENT_SOURCE_RECONCILE] = "reconcile",
	[EVENT_SOURCE_API] = "api",
};

const char *event_source_name(enum event_source s)
{
	if ((int)s < 0 || (int)s >= EVENT_SOURCE_COUNT)
		return "unknown";
	return source_names[s];
}

int event_source_parse(const char *name)
{
	for (int i = 0; name != NULL && i < EVENT_SOURCE_COUNT; i++)
		if (strcasecmp(name, source_names[i]) == 0)
			return i;
	return -1;
}
